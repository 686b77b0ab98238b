"""Retention: purge old telemetry, quarantine and device events in small audited batches.

Telemetry arrives every minute from every device, so without a bound the database grows by ~1.4M rows per
1,000 devices per day. The audit log, the registry, manifests, alerts and lineage are never purged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute

from control_plane.audit import service as audit
from control_plane.db.session import Database
from control_plane.fleet.models import DeviceEvent
from control_plane.settings import Settings
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.models import GroundTruthLabel, QuarantinedMessage, ShadowWindowRow, TelemetryWindowRow
from control_plane.workers import PeriodicWorker

log = logging.getLogger(__name__)

DAY = 86_400.0
ACTOR = "system:retention"


class RetentionConfigError(ValueError):
    """A retention period that would break a guarantee (e.g. shorter than the ingest's dedup horizon)."""


@dataclass(frozen=True)
class Target:
    """One purgeable table: its id column and the column holding when a row was received."""

    id_column: InstrumentedAttribute[int]
    age_column: InstrumentedAttribute[Any]

    @property
    def table(self) -> str:
        """Return the table's name."""
        return str(self.id_column.class_.__tablename__)

    def older_than(self, cutoff: float) -> ColumnElement[bool]:
        """Rows received before ``cutoff`` (epoch seconds in Float columns, an aware UTC datetime otherwise)."""
        is_epoch = isinstance(self.age_column.type, Float)
        return self.age_column < (cutoff if is_epoch else datetime.fromtimestamp(cutoff, UTC))


TARGETS = {target.table: target for target in (
    Target(TelemetryWindowRow.id, TelemetryWindowRow.received_at),
    Target(GroundTruthLabel.id, GroundTruthLabel.received_at),
    Target(ShadowWindowRow.id, ShadowWindowRow.received_at),  # shadow sketches live as long as their windows
    Target(QuarantinedMessage.id, QuarantinedMessage.received_at),
    Target(DeviceEvent.id, DeviceEvent.received_at),
)}


@dataclass(frozen=True)
class RetentionPolicy:
    """How many days each table keeps; 0 keeps forever."""

    days: dict[str, float]
    batch_size: int = 5_000

    @classmethod
    def from_settings(cls, settings: Settings, telemetry: TelemetrySettings | None = None) -> RetentionPolicy:
        """Build the policy and refuse periods that would let a replayed window be stored twice."""
        telemetry = telemetry or TelemetrySettings()
        policy = cls(days={
            "telemetry_windows": settings.retention_telemetry_days,
            "telemetry_labels": settings.retention_telemetry_days,
            "telemetry_shadow_windows": settings.retention_telemetry_days,
            "telemetry_quarantine": settings.retention_quarantine_days,
            "fleet_device_events": settings.retention_device_events_days,
        }, batch_size=settings.retention_batch_size)
        # Idempotency on (device, window_seq) only holds while the first copy is still stored: a window is
        # accepted up to max_age after it ended, so it must be kept longer than that (plus the clock skew).
        horizon = telemetry.max_age_seconds + telemetry.clock_skew_seconds
        kept = settings.retention_telemetry_days * DAY
        if 0 < kept <= horizon:
            raise RetentionConfigError(
                f"EDGELOOP_RETENTION_TELEMETRY_DAYS={settings.retention_telemetry_days} must exceed the ingest's "
                f"max window age ({horizon / DAY:.2f} days, EDGELOOP_TELEMETRY_MAX_AGE_SECONDS + clock skew), "
                "or a replayed window could be stored twice")
        return policy


@dataclass
class PurgeReport:
    """Rows purged (or, in a dry run, due) per table, and the cutoffs used."""

    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Return the rows purged across tables."""
        return sum(self.deleted.values())


def purge(database: Database, policy: RetentionPolicy, *, now: float | None = None,
          dry_run: bool = False) -> PurgeReport:
    """Delete rows older than the policy, one short audited transaction per batch."""
    now = time.time() if now is None else now
    report = PurgeReport(dry_run=dry_run)
    for name, target in TARGETS.items():
        days = policy.days.get(name, 0)
        if days <= 0:
            continue
        cutoff = now - days * DAY
        report.cutoffs[name] = cutoff
        older = target.older_than(cutoff)
        if dry_run:
            with database.transaction(write=False) as session:
                report.deleted[name] = int(session.scalar(select(func.count()).where(older)) or 0)
            continue
        report.deleted[name] = _purge_table(database, target, older, cutoff, policy.batch_size)
    return report


def _purge_table(database: Database, target: Target, older: ColumnElement[bool], cutoff: float,
                 batch_size: int) -> int:
    """Delete in id-ordered batches so each write lock is short; each batch is audited in its transaction."""
    total = 0
    while True:
        with database.transaction() as session:
            ids = list(session.scalars(select(target.id_column).where(older).order_by(target.id_column)
                                       .limit(batch_size)))
            if not ids:
                return total
            result = session.execute(delete(target.id_column.class_).where(target.id_column.in_(ids))
                                     .execution_options(synchronize_session=False))
            # Another replica may have purged some of these ids first: count and audit only what we deleted.
            deleted = int(getattr(result, "rowcount", 0) or 0)
            if deleted:
                audit.record(session, actor=ACTOR, action="retention.purged", resource=("table", target.table),
                             data={"rows": deleted, "first_id": ids[0], "last_id": ids[-1],
                                   "older_than": datetime.fromtimestamp(cutoff, UTC).isoformat()})
        total += deleted
        if len(ids) < batch_size:
            return total


def retention_worker(database: Database, policy: RetentionPolicy, interval: float) -> PeriodicWorker:
    """Purge periodically; a replica that finds nothing old does nothing and writes nothing."""

    def step() -> None:
        report = purge(database, policy)
        if report.total:
            log.info("retention purged %s", report.deleted)

    # No purge on shutdown: a large backlog would hold up the stop, and the next start's schedule catches up.
    return PeriodicWorker("retention", interval, step, final_step=False)

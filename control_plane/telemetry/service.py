"""Telemetry queries and delayed labels (the ingest itself lives in ingest.py)."""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.drift.schemas import LabelsCreate, LabelsResult
from control_plane.telemetry.models import GroundTruthLabel, QuarantinedMessage, TelemetryWindowRow


def list_windows(
    *, session: Session, model: str | None = None, version: int | None = None, device_id: str | None = None,
    since: float | None = None, limit: int = 100,
) -> list[TelemetryWindowRow]:
    """Return stored windows, newest first."""
    t = TelemetryWindowRow
    query = select(t).order_by(t.window_start.desc(), t.id.desc()).limit(limit)
    if model:
        query = query.where(t.model_name == model)
    if version is not None:
        query = query.where(t.model_version == version)
    if device_id:
        query = query.where(t.device_id == device_id)
    if since is not None:
        query = query.where(t.window_start >= since)
    return list(session.scalars(query))


def list_quarantine(*, session: Session, reason: str | None = None, device_id: str | None = None,
                    limit: int = 100) -> list[QuarantinedMessage]:
    """Return quarantined messages, newest first."""
    q = QuarantinedMessage
    query = select(q).order_by(q.id.desc()).limit(limit)
    if reason:
        query = query.where(q.reason == reason)
    if device_id:
        query = query.where(q.device_id == device_id)
    return list(session.scalars(query))


def totals(*, session: Session) -> tuple[int, dict[str, int]]:
    """Return (stored windows, quarantined messages per reason)."""
    windows = session.scalar(select(func.count()).select_from(TelemetryWindowRow)) or 0
    reasons = session.execute(select(QuarantinedMessage.reason, func.count()).group_by(QuarantinedMessage.reason))
    return int(windows), {str(reason): int(count) for reason, count in reasons}


def post_labels(*, session: Session, request: LabelsCreate, actor: str) -> LabelsResult:
    """Store ground truth per window (replacing earlier labels of the same window); unknown windows are listed."""
    t = TelemetryWindowRow
    keys = list({(e.device_id, e.window_seq) for e in request.labels})
    found: dict[tuple[str, int], tuple[str, int, float]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = session.execute(select(t.device_id, t.window_seq, t.model_name, t.model_version, t.window_start)
                               .where(tuple_(t.device_id, t.window_seq).in_(chunk)))
        found.update({(r[0], int(r[1])): (r[2], int(r[3]), float(r[4])) for r in rows})
    entries = {(e.device_id, e.window_seq): e for e in request.labels if (e.device_id, e.window_seq) in found}
    replaced = 0
    label = GroundTruthLabel
    for start in range(0, len(entries), 500):
        chunk = list(entries)[start : start + 500]
        result = session.execute(delete(label).where(tuple_(label.device_id, label.window_seq).in_(chunk)))
        replaced += int(getattr(result, "rowcount", 0) or 0)
    now = time.time()
    rows_to_insert = []
    for key, entry in entries.items():
        model_name, model_version, window_start = found[key]
        total = sum(c for _, _, c in entry.confusion)
        correct = sum(c for p, a, c in entry.confusion if p == a)
        rows_to_insert.append({"device_id": key[0], "window_seq": key[1], "model_name": model_name,
                               "model_version": model_version, "window_start": window_start, "total": total,
                               "correct": correct, "confusion": json.dumps([list(x) for x in entry.confusion]),
                               "received_at": now})
    if rows_to_insert:
        session.execute(insert(label), rows_to_insert)
    session.flush()
    unknown = sorted(set(keys) - set(found))
    audit.record(session, actor=actor, action="telemetry.labels", resource=("telemetry_labels", "batch"),
                 data={"stored": len(rows_to_insert), "replaced": replaced, "unknown": len(unknown)})
    return LabelsResult(stored=len(rows_to_insert), replaced=replaced, unknown_windows=unknown[:1000])

"""Caches the ingest consults per batch: baseline layouts by id, and device cohorts from the fleet tables."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from control_plane.drift.baseline import baseline_from_dict
from control_plane.drift.sketch import SketchLayout
from control_plane.registry.models import Dataset, ModelVersion, RegisteredModel

log = logging.getLogger(__name__)


class BaselineCache:
    """Map baseline_id -> SketchLayout for every dataset that carries a baseline; reload on a miss, throttled.

    A stored baseline that fails the strict schema (or anything else while loading it) is marked invalid with
    its reason instead of raising: the ingest quarantines its windows as `baseline_invalid`, reports say so, and
    every other baseline keeps working.
    """

    def __init__(self, min_reload_seconds: float = 2.0) -> None:
        self.min_reload_seconds = min_reload_seconds
        self._layouts: dict[str, SketchLayout] = {}
        self._datasets: dict[str, str] = {}
        self._invalid: dict[str, str] = {}
        self._loaded_at = float("-inf")

    def get(self, session: Session, baseline_id: str) -> SketchLayout | None:
        """Return the layout of `baseline_id`, reloading datasets at most every `min_reload_seconds`."""
        layout = self._layouts.get(baseline_id)
        if layout is None and time.monotonic() - self._loaded_at >= self.min_reload_seconds:
            self.reload(session)
            layout = self._layouts.get(baseline_id)
        return layout

    def dataset_id(self, baseline_id: str) -> str | None:
        """Return the dataset that registered `baseline_id`, if loaded."""
        return self._datasets.get(baseline_id)

    def invalid_reason(self, baseline_id: str) -> str | None:
        """Return why the stored baseline `baseline_id` is unusable, or None if it is valid or unknown."""
        return self._invalid.get(baseline_id)

    def reload(self, session: Session) -> None:
        """Parse every stored baseline; a broken one is marked invalid, logged and skipped."""
        layouts: dict[str, SketchLayout] = {}
        datasets: dict[str, str] = {}
        invalid: dict[str, str] = {}
        for dataset_id, document in self._stored(session):
            baseline_id = document.get("baseline_id") if isinstance(document, dict) else None
            if not isinstance(baseline_id, str) or not baseline_id:
                continue
            try:
                layouts[baseline_id] = self._layouts.get(baseline_id) or SketchLayout.from_baseline(
                    baseline_from_dict(document))
            except Exception as exc:  # any error: one stored baseline must never cost the others
                log.warning("dataset %s has an invalid baseline %s: %s", dataset_id, baseline_id[:64], exc)
                invalid[baseline_id] = f"dataset {dataset_id}: {str(exc)[:300]}"
                continue
            datasets[baseline_id] = dataset_id
        self._layouts, self._datasets = layouts, datasets
        self._invalid = {k: v for k, v in invalid.items() if k not in layouts}
        self._loaded_at = time.monotonic()

    @staticmethod
    def _stored(session: Session) -> list[tuple[str, Any]]:
        """Return (dataset id, baseline document) pairs; a row whose JSON cannot be decoded is left out."""
        query = select(Dataset.id, Dataset.baseline).where(Dataset.baseline.is_not(None))
        try:
            with session.begin_nested():
                return [(row[0], row[1]) for row in session.execute(query)]
        except Exception:  # e.g. a non-JSON text in SQLite's JSON column: load row by row
            log.warning("stored baselines could not be loaded in one query; loading them one by one")
        pairs = []
        for dataset_id in session.scalars(select(Dataset.id).where(Dataset.baseline.is_not(None))):
            try:
                with session.begin_nested():
                    pairs.append((dataset_id, session.scalar(select(Dataset.baseline).where(Dataset.id == dataset_id))))
            except Exception as exc:  # this row only
                log.warning("dataset %s: stored baseline is unreadable: %s", dataset_id, exc)
        return pairs


class ModelCatalog:
    """The registered (model name, version) pairs; reloaded on a miss, at most every `min_reload_seconds`."""

    def __init__(self, min_reload_seconds: float = 2.0) -> None:
        self.min_reload_seconds = min_reload_seconds
        self._known: set[tuple[str, int]] = set()
        self._loaded_at = float("-inf")

    def known(self, session: Session, name: str, version: int) -> bool:
        """Return True when the registry holds `name` version `version`."""
        if (name, version) in self._known:
            return True
        if time.monotonic() - self._loaded_at >= self.min_reload_seconds:
            query = select(RegisteredModel.name, ModelVersion.version).join(
                ModelVersion, ModelVersion.model_id == RegisteredModel.id)
            self._known = {(str(row[0]), int(row[1])) for row in session.execute(query)}
            self._loaded_at = time.monotonic()
        return (name, version) in self._known


@dataclass(frozen=True)
class Cohort:
    """Where a device sits in the fleet: its group and the rollout/deployment that last targeted it."""

    device_group: str | None = None
    rollout_id: str | None = None
    deployment_id: str | None = None


class CohortResolver:
    """Look devices up in the fleet tables when they exist; cached for `ttl` seconds."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Cohort]] = {}
        self._fleet_available = True

    def resolve(self, session: Session, device_ids: set[str]) -> dict[str, Cohort]:
        """Return a cohort per device (empty cohorts when the fleet tables are absent)."""
        now = time.monotonic()
        missing = {d for d in device_ids if d not in self._cache or now - self._cache[d][0] > self.ttl}
        if missing and self._fleet_available:
            for device_id, cohort in self._query(session, missing).items():
                self._cache[device_id] = (now, cohort)
        for device_id in missing:
            self._cache.setdefault(device_id, (now, Cohort()))
        return {d: self._cache[d][1] for d in device_ids}

    def _query(self, session: Session, device_ids: set[str]) -> dict[str, Cohort]:
        try:
            from control_plane.fleet.models import Device, Rollout
        except ImportError:
            self._fleet_available = False
            return {}
        query = (
            select(Device.id, Device.group_name, Device.desired_rollout_id, Rollout.deployment_id)
            .outerjoin(Rollout, Rollout.id == Device.desired_rollout_id)
            .where(Device.id.in_(sorted(device_ids)))
        )
        try:
            # A savepoint, so a database without the fleet migration does not abort the ingest transaction.
            with session.begin_nested():
                rows = session.execute(query).all()
        except SQLAlchemyError:
            log.info("fleet tables not available; telemetry cohorts come from the windows only")
            self._fleet_available = False
            return {}
        return {row[0]: Cohort(row[1], row[2], row[3]) for row in rows}

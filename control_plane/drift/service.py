"""Merge stored windows by model version, cohort and time; derive drift, quality, latency and error figures."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.approvals.models import DeviceQuarantine
from control_plane.drift.baseline import Baseline, BaselineError, baseline_from_dict
from control_plane.drift.schemas import (
    MAX_EXACT_VALUES,
    DriftReportRead,
    ExactRequest,
    FeatureBucket,
    ReportBucket,
)
from control_plane.drift.selection import DriftConfig, DriftReport, detect_drift
from control_plane.drift.sketch import (
    LATENCY_BUCKETS_MS,
    MergedSketch,
    SketchLayout,
    detect_drift_sketch,
    merge_vectors,
)
from control_plane.errors import Invalid, NotFound
from control_plane.registry.models import Dataset
from control_plane.telemetry.lookup import BaselineCache
from control_plane.telemetry.models import TelemetryWindowRow

MAX_REPORT_BUCKETS = 500


@dataclass(frozen=True)
class WindowScope:
    """Which stored windows to merge."""

    model_name: str
    model_version: int
    since: float
    until: float
    device_group: str | None = None
    rollout_id: str | None = None
    deployment_id: str | None = None


@dataclass
class StoredWindow:
    """The columns of a stored window the merge needs, its sketch decoded into a dense vector lazily."""

    baseline_id: str
    device_id: str
    window_start: float
    window_end: float
    device_group: str | None
    rollout_id: str | None
    sketch: str


@dataclass
class Merged:
    """A merged sketch plus the identity of what went into it (evidence)."""

    sketch: MergedSketch
    devices: set[str] = field(default_factory=set)
    first_start: float = float("inf")
    last_end: float = float("-inf")


def load_windows(session: Session, scope: WindowScope) -> list[StoredWindow]:
    """Return the windows of a scope, oldest first."""
    t = TelemetryWindowRow
    query = select(t.baseline_id, t.device_id, t.window_start, t.window_end, t.device_group, t.rollout_id,
                   t.sketch).where(t.model_name == scope.model_name, t.model_version == scope.model_version,
                                   t.window_start >= scope.since, t.window_start < scope.until)
    if scope.device_group:
        query = query.where(t.device_group == scope.device_group)
    if scope.rollout_id:
        query = query.where(t.rollout_id == scope.rollout_id)
    if scope.deployment_id:
        query = query.where(t.deployment_id == scope.deployment_id)
    # A quarantined device's telemetry stays out of fleet drift (docs/approvals.md).
    query = query.where(t.device_id.not_in(select(DeviceQuarantine.device_id)))
    return [StoredWindow(*row) for row in session.execute(query.order_by(t.window_start))]


def merge_stored(layout: SketchLayout, windows: Iterable[StoredWindow]) -> Merged:
    """Sum the sparse sketches of windows into one vector (one scatter-add per window)."""
    total = np.zeros(layout.length, dtype=np.int64)
    merged = Merged(sketch=merge_vectors(layout, total))
    count = 0
    for window in windows:
        indices, counts = json.loads(window.sketch)
        np.add.at(total, np.asarray(indices, dtype=np.int64), np.asarray(counts, dtype=np.int64))
        merged.devices.add(window.device_id)
        merged.first_start = min(merged.first_start, window.window_start)
        merged.last_end = max(merged.last_end, window.window_end)
        count += 1
    merged.sketch = MergedSketch(layout=layout, vector=total, n_windows=count)
    return merged


def group_by(windows: Iterable[StoredWindow], key: Callable[[StoredWindow], Any]) -> dict[Any, list[StoredWindow]]:
    """Split windows by a key (baseline, cohort, time bucket)."""
    groups: dict[Any, list[StoredWindow]] = {}
    for window in windows:
        groups.setdefault(key(window), []).append(window)
    return groups


def latency_quantile_ms(latency: np.ndarray, q: float) -> float | None:
    """Return the upper bound (ms) of the bucket holding quantile q; inf for the overflow bucket."""
    total = int(latency.sum())
    if total == 0:
        return None
    position = int(np.searchsorted(np.cumsum(latency), q * total, side="left"))
    return float(LATENCY_BUCKETS_MS[position]) if position < len(LATENCY_BUCKETS_MS) else float("inf")


@dataclass(frozen=True)
class Quality:
    """Rates derived from a merged sketch: per-feature missing and out-of-range, errors, latency."""

    n: int
    calls: int
    missing_rate: dict[str, float]
    baseline_missing_rate: dict[str, float]
    out_of_range_rate: dict[str, float]
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


def quality(sketch: MergedSketch) -> Quality:
    """Compute data-quality and service figures of a merged sketch."""
    baseline = sketch.layout.baseline
    n = int(sketch.counts("n")[0])
    calls = int(sketch.counts("calls")[0])
    names = baseline.feature_names()
    missing = sketch.counts("nan") + sketch.counts("inf")
    out = sketch.counts("below_min") + sketch.counts("above_max")
    reference = [(f.missing, f.n) for f in baseline.numeric] + [(f.missing, f.n) for f in baseline.categorical]
    latency = sketch.counts("latency")
    return Quality(
        n=n, calls=calls,
        missing_rate={name: float(missing[i]) / n if n else 0.0 for i, name in enumerate(names)},
        baseline_missing_rate={name: m / (m + k) if m + k else 0.0
                               for name, (m, k) in zip(names, reference, strict=True)},
        out_of_range_rate={f.name: float(out[i]) / n if n else 0.0 for i, f in enumerate(baseline.numeric)},
        error_rate=float(sketch.counts("errors")[0]) / calls if calls else None,
        latency_p50_ms=latency_quantile_ms(latency, 0.50),
        latency_p95_ms=latency_quantile_ms(latency, 0.95),
        latency_p99_ms=latency_quantile_ms(latency, 0.99),
    )


def _bucket(merged: Merged, config: DriftConfig, start: float, end: float) -> ReportBucket:
    report = detect_drift_sketch(merged.sketch, config)
    figures = quality(merged.sketch)
    features = [
        FeatureBucket(feature=f.feature, test=f.test, statistic=_finite(f.statistic), psi=_finite(f.psi),
                      band=f.band.value, p_adjusted=f.p_adjusted, drifted=f.drifted, n_current=f.n_current,
                      missing_rate=figures.missing_rate.get(f.feature),
                      out_of_range_rate=figures.out_of_range_rate.get(f.feature))
        for f in report.features
    ]
    p95 = figures.latency_p95_ms
    return ReportBucket(start=start, end=end, windows=merged.sketch.n_windows, devices=len(merged.devices),
                        n=figures.n, error_rate=figures.error_rate,
                        latency_p95_ms=p95 if p95 is None or np.isfinite(p95) else None, features=features)


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 1e308


def drift_report(*, session: Session, baselines: BaselineCache, scope: WindowScope, bucket_seconds: float,
                 config: DriftConfig | None = None) -> DriftReportRead:
    """Return per-bucket and overall drift of a scope's windows against their baseline (the most used one)."""
    if (scope.until - scope.since) / bucket_seconds > MAX_REPORT_BUCKETS:
        raise Invalid(f"at most {MAX_REPORT_BUCKETS} buckets per report; widen bucket_seconds")
    config = config or DriftConfig()
    windows = load_windows(session, scope)
    cohort = {"device_group": scope.device_group, "rollout_id": scope.rollout_id,
              "deployment_id": scope.deployment_id}
    by_baseline = group_by(windows, lambda w: w.baseline_id)
    report = DriftReportRead(model_name=scope.model_name, model_version=scope.model_version, since=scope.since,
                             until=scope.until, bucket_seconds=bucket_seconds, cohort=cohort, baseline_id=None,
                             overall=None, buckets=[])
    usable: dict[str, tuple[SketchLayout, list[StoredWindow]]] = {}
    unusable: dict[str, str] = {}
    for baseline_id, members in by_baseline.items():
        layout = baselines.get(session, baseline_id)
        if layout is None:
            # A stored baseline that fails the schema is reported, never a 500; the others still count.
            unusable[baseline_id] = baselines.invalid_reason(baseline_id) or "not registered"
        else:
            usable[baseline_id] = (layout, members)
    report = report.model_copy(update={"invalid_baselines": unusable})
    if not usable:
        return report
    baseline_id, (layout, chosen) = max(usable.items(), key=lambda item: len(item[1][1]))
    buckets = []
    by_bucket = group_by(chosen, lambda w: int((w.window_start - scope.since) // bucket_seconds))
    for index, members in sorted(by_bucket.items()):
        start = scope.since + index * bucket_seconds
        buckets.append(_bucket(merge_stored(layout, members), config, start, start + bucket_seconds))
    overall = _bucket(merge_stored(layout, chosen), config, scope.since, scope.until)
    return report.model_copy(update={"baseline_id": baseline_id, "overall": overall, "buckets": buckets})


def dataset_baseline(*, session: Session, dataset_id: str) -> Baseline:
    """Return a registered dataset's baseline or raise."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    if not dataset.baseline:
        raise Invalid(f"dataset {dataset_id!r} has no baseline")
    try:
        return baseline_from_dict(dataset.baseline)
    except BaselineError as exc:
        raise Invalid(f"dataset {dataset_id!r} has an unusable baseline: {exc}") from exc


def _matrix(rows: list[list[float | None]], name: str, width: int | None) -> np.ndarray:
    widths = {len(r) for r in rows}
    if len(widths) != 1 or (width is not None and widths != {width}):
        raise Invalid(f"{name}: every row must have the same number of columns" +
                      (f" ({width})" if width is not None else ""))
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


def bin_rows(layout: SketchLayout, rows: np.ndarray) -> MergedSketch:
    """Count raw rows into a baseline's sketch layout, as a device would (missing values count as NaN)."""
    baseline = layout.baseline
    vector = np.zeros(layout.length, dtype=np.int64)
    vector[layout.offsets["n"]] = rows.shape[0]
    bins_at, cats_at = layout.offsets["bins"], layout.offsets["cats"]
    nan_at, inf_at = layout.offsets["nan"], layout.offsets["inf"]
    for k, feature in enumerate(baseline.numeric):
        column = rows[:, feature.index]
        finite = np.isfinite(column)
        vector[nan_at + k] = int(np.isnan(column).sum())
        vector[inf_at + k] = int(np.isinf(column).sum())
        vector[layout.offsets["below_min"] + k] = int((column[finite] < feature.min).sum())
        vector[layout.offsets["above_max"] + k] = int((column[finite] > feature.max).sum())
        positions = np.searchsorted(np.asarray(feature.edges), column[finite], side="right")
        start = bins_at + int(baseline.numeric_bin_offsets[k])
        vector[start : start + len(feature.edges) + 1] += np.bincount(positions, minlength=len(feature.edges) + 1)
    n_num = len(baseline.numeric)
    for k, category in enumerate(baseline.categorical):
        column = rows[:, category.index]
        finite = np.isfinite(column)
        vector[nan_at + n_num + k] = int(np.isnan(column).sum())
        vector[inf_at + n_num + k] = int(np.isinf(column).sum())
        vocabulary = np.asarray(category.values)
        values = column[finite]
        position = np.minimum(np.searchsorted(vocabulary, values), max(vocabulary.size - 1, 0))
        known = vocabulary[position] == values if vocabulary.size else np.zeros(values.size, dtype=bool)
        vector[layout.offsets["unseen"] + k] = int((~known).sum())
        start = cats_at + int(baseline.categorical_offsets[k])
        vector[start : start + vocabulary.size] += np.bincount(position[known], minlength=vocabulary.size)
    return MergedSketch(layout=layout, vector=vector, n_windows=1)


def exact_drift(*, session: Session, request: ExactRequest) -> DriftReport:
    """Compare raw rows to raw reference rows (exact KS) or to a dataset's baseline bins."""
    config = DriftConfig(method=request.method, alpha=request.alpha, correction=request.correction,
                         min_samples=request.min_samples, min_effect=request.min_effect)
    reference_rows = request.reference.rows or []
    width = len(request.current[0])
    if (len(reference_rows) + len(request.current)) * width > MAX_EXACT_VALUES:
        raise Invalid(f"at most {MAX_EXACT_VALUES} values per comparison")
    current = _matrix(request.current, "current", None)
    if request.reference.dataset_id is not None:
        baseline = dataset_baseline(session=session, dataset_id=request.reference.dataset_id)
        if current.shape[1] != baseline.n_features:
            raise Invalid(f"current has {current.shape[1]} columns; the baseline has {baseline.n_features}")
        layout = SketchLayout.from_baseline(baseline)
        report = detect_drift_sketch(bin_rows(layout, current), config, include_output=False)
        return report
    reference = _matrix(reference_rows, "reference.rows", width)
    if request.feature_names is not None and len(request.feature_names) != width:
        raise Invalid(f"feature_names has {len(request.feature_names)} names for {width} columns")
    if any(i < 0 or i >= width for i in request.categorical):
        raise Invalid("categorical column index out of range")
    return detect_drift(reference, current, feature_names=request.feature_names, categorical=request.categorical,
                        config=config)

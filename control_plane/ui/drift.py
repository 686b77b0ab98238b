"""The drift page: a PSI heatmap over features and time, reference-vs-current histograms, tests and data quality."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from control_plane.constraints import INT32_MAX
from control_plane.deps import SessionDep
from control_plane.drift import service
from control_plane.drift.routes import baseline_cache
from control_plane.drift.selection import DriftConfig
from control_plane.drift.sketch import SketchLayout
from control_plane.telemetry.models import TelemetryWindowRow
from control_plane.ui.auth import CurrentViewer
from control_plane.ui.charts import PSI_MAJOR, PSI_MODERATE, Chart, histogram_pair, psi_heatmap
from control_plane.ui.rendering import render

router = APIRouter(prefix="/ui/drift", include_in_schema=False)
MAX_HISTOGRAMS = 6


def monitored_versions(session: Session, limit: int = 50) -> list[tuple[str, int, int]]:
    """Return (model, version, windows) for the versions that have telemetry, busiest first."""
    t = TelemetryWindowRow
    query = (select(t.model_name, t.model_version, func.count()).group_by(t.model_name, t.model_version)
             .order_by(func.count().desc()).limit(limit))
    return [(name, int(version), int(count)) for name, version, count in session.execute(query)]


def feature_histograms(layout: SketchLayout, vector: np.ndarray, features: list[str]) -> list[Chart]:
    """Return reference-vs-current decile histograms of the named numeric features."""
    baseline = layout.baseline
    offsets = baseline.numeric_bin_offsets
    bins = vector[layout.field("bins")]
    charts = []
    for feature in baseline.numeric:
        if feature.name not in features:
            continue
        current = bins[offsets[feature.index]:offsets[feature.index + 1]]
        starts = [0] + [c + 1 for c in feature.coarse]
        decile_edges = [feature.edges[c] for c in feature.coarse]
        charts.append(histogram_pair(feature.name, decile_edges,
                                     np.add.reduceat(np.asarray(feature.counts, dtype=np.float64), starts),
                                     np.add.reduceat(current.astype(np.float64), starts)))
    return charts


@router.get("")
def drift_page(
    request: Request, viewer: CurrentViewer, session: SessionDep,
    model: Annotated[str | None, Query(max_length=200)] = None,
    version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    device_group: Annotated[str | None, Query(max_length=200)] = None,
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
    buckets: Annotated[int, Query(ge=1, le=96)] = 24,
) -> Response:
    """Show drift of one model version (the busiest by default) over the last ``hours`` in ``buckets`` columns."""
    versions = monitored_versions(session)
    if model is None and versions:
        model, version = versions[0][0], versions[0][1]
    context: dict[str, Any] = {
        "viewer": viewer, "title": "Drift", "versions": versions, "model": model, "version": version,
        "device_group": device_group or "", "hours": hours, "buckets": buckets, "report": None, "heatmap": None,
        "histograms": [], "bands": (PSI_MODERATE, PSI_MAJOR),
    }
    if model is None or version is None:
        return render(request, "drift.html", context)
    until = time.time()
    scope = service.WindowScope(model, version, until - hours * 3600, until, device_group or None, None, None)
    report = service.drift_report(session=session, baselines=baseline_cache(request), scope=scope,
                                  bucket_seconds=hours * 3600 / buckets, config=DriftConfig())
    context.update(report=report, heatmap=psi_heatmap(report))
    if report.overall and report.baseline_id:
        layout = baseline_cache(request).get(session, report.baseline_id)
        worst = [f.feature for f in sorted(report.overall.features, key=lambda f: -f.psi)[:MAX_HISTOGRAMS]]
        windows = [w for w in service.load_windows(session, scope) if w.baseline_id == report.baseline_id]
        if layout is not None:
            merged = service.merge_stored(layout, windows)
            context["histograms"] = feature_histograms(layout, merged.sketch.vector, worst)
    return render(request, "drift.html", context)

"""Telemetry sketches and drift detection: baselines, statistics, test choice, mergeable windows."""

from control_plane.drift.baseline import Baseline, BaselineError, baseline_from_dict, build_baseline
from control_plane.drift.selection import DriftConfig, DriftReport, FeatureDrift, detect_drift
from control_plane.drift.sketch import (
    MergedSketch,
    SketchLayout,
    TelemetryWindow,
    WindowError,
    detect_drift_sketch,
    merge_vectors,
    merge_windows,
    parse_window,
)
from control_plane.drift.stats import Band, adjust_pvalues, psi_band

__all__ = [
    "Band",
    "Baseline",
    "BaselineError",
    "DriftConfig",
    "DriftReport",
    "FeatureDrift",
    "MergedSketch",
    "SketchLayout",
    "TelemetryWindow",
    "WindowError",
    "adjust_pvalues",
    "baseline_from_dict",
    "build_baseline",
    "detect_drift",
    "detect_drift_sketch",
    "merge_vectors",
    "merge_windows",
    "parse_window",
    "psi_band",
]

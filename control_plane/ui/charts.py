"""Chart geometry for server-rendered SVG: Python computes shapes and colours, templates only loop and escape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from control_plane.drift.schemas import DriftReportRead
from control_plane.drift.stats import PSI_MAJOR, PSI_MODERATE

CELL_W, CELL_H, LABEL_W, HEADER_H = 28, 18, 150, 22


@dataclass(frozen=True)
class Cell:
    """One rectangle of a chart, with the tooltip text shown on hover and to screen readers."""

    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class TextMark:
    """A label placed on a chart."""

    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass(frozen=True)
class Chart:
    """An SVG chart: its size, shapes, labels and guide lines (x1, y1, x2, y2, css class)."""

    width: float
    height: float
    cells: list[Cell]
    labels: list[TextMark]
    lines: list[tuple[float, float, float, float, str]]
    description: str


def psi_colour(psi: float) -> str:
    """Map PSI onto green (stable) → amber (moderate) → red (significant), saturating at 0.5."""
    if psi < PSI_MODERATE:
        return "#dcefe2" if psi < PSI_MODERATE / 2 else "#b9e0c4"
    if psi < PSI_MAJOR:
        return "#ffe08a" if psi < (PSI_MODERATE + PSI_MAJOR) / 2 else "#f8b94c"
    return "#f08a6c" if psi < 0.5 else "#c9341f"


def psi_heatmap(report: DriftReportRead, max_features: int = 40) -> Chart | None:
    """Return a features-by-time-bucket heatmap of PSI; None when the report has no buckets."""
    if not report.buckets:
        return None
    features = [f.feature for f in report.overall.features] if report.overall else []
    worst = sorted(features, key=lambda name: -max((f.psi for b in report.buckets for f in b.features
                                                     if f.feature == name), default=0.0))[:max_features]
    rows = {name: index for index, name in enumerate(worst)}
    cells, labels = [], []
    for column, bucket in enumerate(report.buckets):
        x = LABEL_W + column * CELL_W
        for feature in bucket.features:
            if feature.feature not in rows:
                continue
            y = HEADER_H + rows[feature.feature] * CELL_H
            p = "n/a" if feature.p_adjusted is None else f"{feature.p_adjusted:.3g}"
            cells.append(Cell(x, y, CELL_W - 1, CELL_H - 1, psi_colour(feature.psi),
                              f"{feature.feature}, bucket {column + 1}: PSI {feature.psi:.3f} ({feature.band}), "
                              f"{feature.test} {feature.statistic:.3f}, p_adj {p}, n {feature.n_current}"))
    for name, row in rows.items():
        labels.append(TextMark(LABEL_W - 6, HEADER_H + row * CELL_H + CELL_H * 0.72, name, "end"))
    step = max(1, len(report.buckets) // 8)
    for column in range(0, len(report.buckets), step):
        labels.append(TextMark(LABEL_W + column * CELL_W + 2, HEADER_H - 6, f"#{column + 1}"))
    width = LABEL_W + len(report.buckets) * CELL_W + 10
    height = HEADER_H + len(rows) * CELL_H + 10
    return Chart(width, height, cells, labels, [], f"PSI per feature (rows) and time bucket (columns) for "
                 f"{report.model_name} v{report.model_version}; the {len(rows)} most drifted features")


def histogram_pair(name: str, edges: list[float], reference: np.ndarray, current: np.ndarray,
                   width: float = 420, height: float = 160) -> Chart:
    """Return side-by-side bars of the reference and current share per bin, with the bin edges as labels."""
    ref_share = reference / max(float(reference.sum()), 1.0)
    cur_share = current / max(float(current.sum()), 1.0)
    top = max(float(ref_share.max(initial=0)), float(cur_share.max(initial=0)), 1e-9)
    bins = len(ref_share)
    plot_h, base = height - 30, height - 20
    slot = (width - 20) / max(bins, 1)
    cells = []
    for index in range(bins):
        left = f"{edges[index - 1]:.3g}" if 0 < index <= len(edges) else "-inf"
        right = f"{edges[index]:.3g}" if index < len(edges) else "+inf"
        for offset, shares, fill, who in ((0.0, ref_share, "#8aa4c8", "reference"),
                                          (0.5, cur_share, "#e07b39", "current")):
            bar_h = plot_h * float(shares[index]) / top
            cells.append(Cell(10 + index * slot + offset * slot, base - bar_h, slot * 0.45, bar_h, fill,
                              f"{name} [{left}, {right}): {who} {100 * float(shares[index]):.1f}%"))
    lines = [(10.0, base, width - 10, base, "axis")]
    labels = [TextMark(10, height - 6, f"{edges[0]:.3g}" if edges else ""),
              TextMark(width - 10, height - 6, f"{edges[-1]:.3g}" if edges else "", "end")]
    return Chart(width, height, cells, labels, lines,
                 f"share of values per bin for {name}: reference (blue) against current (orange)")

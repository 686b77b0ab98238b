"""Chart geometry for server-rendered SVG: Python computes shapes and colours, templates only loop and escape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from control_plane.drift.schemas import DriftReportRead
from control_plane.drift.stats import PSI_MAJOR, PSI_MODERATE
from control_plane.lineage.schemas import LineageGraph

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


@dataclass(frozen=True)
class GraphNode:
    """A lineage node placed on the canvas, linking to its own lineage page."""

    x: float
    y: float
    kind: str
    label: str
    href: str
    is_root: bool


@dataclass(frozen=True)
class GraphDrawing:
    """A layered drawing of a lineage graph: upstream to the left of the root, downstream to the right."""

    width: float
    height: float
    nodes: list[GraphNode]
    edges: list[tuple[float, float, float, float, str]]
    node_width: float
    node_height: float


NODE_W, NODE_H, GAP_X, GAP_Y = 190.0, 40.0, 70.0, 14.0


def lineage_drawing(graph: LineageGraph) -> GraphDrawing:
    """Place every node in a column by its signed hop distance from the root (a BFS each way)."""
    forward: dict[str, list[str]] = {}
    backward: dict[str, list[str]] = {}
    for edge in graph.edges:
        forward.setdefault(edge.src, []).append(edge.dst)
        backward.setdefault(edge.dst, []).append(edge.src)
    layer = {graph.root: 0}
    for neighbours, sign in ((forward, 1), (backward, -1)):
        frontier = [graph.root]
        while frontier:
            following = []
            for key in frontier:
                for other in neighbours.get(key, []):
                    if other not in layer:
                        layer[other] = layer[key] + sign
                        following.append(other)
            frontier = following
    keys = {f"{node.kind.value}:{node.id}": node for node in graph.nodes}
    columns: dict[int, list[str]] = {}
    for key in sorted(keys, key=lambda k: (layer.get(k, 0), k)):
        columns.setdefault(layer.get(key, 0), []).append(key)
    low = min(columns, default=0)
    tallest = max((len(c) for c in columns.values()), default=1)
    positions: dict[str, tuple[float, float]] = {}
    nodes = []
    for column, members in columns.items():
        x = 10 + (column - low) * (NODE_W + GAP_X)
        top = 10 + (tallest - len(members)) * (NODE_H + GAP_Y) / 2
        for row, key in enumerate(members):
            y = top + row * (NODE_H + GAP_Y)
            positions[key] = (x, y)
            node = keys[key]
            nodes.append(GraphNode(x, y, node.kind.value, node.label or node.id,
                                   f"/ui/lineage/{node.kind.value}/{node.id}", key == graph.root))
    edges = [(positions[e.src][0] + NODE_W, positions[e.src][1] + NODE_H / 2, positions[e.dst][0],
              positions[e.dst][1] + NODE_H / 2, e.relation)
             for e in graph.edges if e.src in positions and e.dst in positions]
    width = 20 + len(columns) * (NODE_W + GAP_X)
    height = 20 + tallest * (NODE_H + GAP_Y)
    return GraphDrawing(width, height, nodes, edges, NODE_W, NODE_H)


def psi_bars(report: DriftReportRead, top: int = 8, width: float = 460) -> Chart | None:
    """Return horizontal PSI bars of the most drifted features with the 0.10 / 0.25 bands as guide lines."""
    if report.overall is None or not report.overall.features:
        return None
    worst = sorted(report.overall.features, key=lambda f: -f.psi)[:top]
    scale_max = max(0.5, max(f.psi for f in worst))
    plot_w, row_h, left = width - LABEL_W - 20, 18.0, LABEL_W
    cells, labels = [], []
    for row, feature in enumerate(worst):
        y = 8 + row * row_h
        bar = plot_w * min(feature.psi, scale_max) / scale_max
        p = "n/a" if feature.p_adjusted is None else f"{feature.p_adjusted:.3g}"
        cells.append(Cell(left, y, max(bar, 1.0), row_h - 4, psi_colour(feature.psi),
                          f"{feature.feature}: PSI {feature.psi:.3f} ({feature.band}), p_adj {p}"))
        labels.append(TextMark(left - 6, y + row_h * 0.6, feature.feature, "end"))
        labels.append(TextMark(left + bar + 4, y + row_h * 0.6, f"{feature.psi:.2f}"))
    height = 16 + len(worst) * row_h
    lines = [(left + plot_w * band / scale_max, 4.0, left + plot_w * band / scale_max, height - 4, "band")
             for band in (PSI_MODERATE, PSI_MAJOR)]
    scope = ", ".join(f"{k}={v}" for k, v in report.cohort.items() if v) or "all devices"
    return Chart(width, height, cells, labels, lines, f"PSI of the most drifted features of {report.model_name} "
                 f"v{report.model_version} ({scope}, last 24 h); guide lines at {PSI_MODERATE} and {PSI_MAJOR}")

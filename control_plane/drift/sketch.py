"""Telemetry windows as mergeable count vectors: validate against a baseline, merge, test for drift.

Every window becomes one int64 vector laid out by `SketchLayout`, so merging N windows is one sum over
an (N, L) matrix (or N in-place adds) and drift tests run on the summed vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from control_plane.drift.baseline import Baseline
from control_plane.drift.selection import (
    DriftConfig,
    DriftReport,
    FeatureArrays,
    FeatureKind,
    assemble_report,
    counts_into_arrays,
)
from control_plane.drift.stats import ks_from_counts

TELEMETRY_SCHEMA = "edgeloop.telemetry/v1"
# Upper bounds (ms) of the fixed latency buckets; one more bucket catches everything slower.
# Must equal edge_agent.telemetry.LATENCY_BUCKETS_MS (a test checks).
LATENCY_BUCKETS_MS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
SPARSE_FIELDS = ("bins", "cats", "unseen", "nan", "inf", "below_min", "above_max", "output", "confidence", "latency")
SCALAR_FIELDS = ("n", "calls", "errors", "output_unseen")


class WindowError(ValueError):
    """A telemetry window the ingest must quarantine; `reason` is machine-readable."""

    reason = "malformed"


class SchemaError(WindowError):
    """The message is not a well-formed edgeloop.telemetry/v1 document."""

    reason = "malformed"


class BaselineMismatch(WindowError):
    """The window was binned against another baseline."""

    reason = "baseline_mismatch"


class BinMismatch(WindowError):
    """A sparse index points outside the baseline's bins or repeats."""

    reason = "bin_mismatch"


class NegativeCount(WindowError):
    """A count is below zero."""

    reason = "negative_count"


class NonFiniteCount(WindowError):
    """A count is NaN, infinite or not an integer."""

    reason = "nonfinite_count"


class InconsistentCounts(WindowError):
    """A feature's counts do not add up to the window's row count."""

    reason = "inconsistent_counts"


@dataclass(frozen=True)
class SketchLayout:
    """Where each counter of a window lives in the flat int64 vector, derived from one baseline."""

    baseline: Baseline
    sizes: dict[str, int]
    offsets: dict[str, int]
    length: int

    @classmethod
    def from_baseline(cls, baseline: Baseline) -> SketchLayout:
        """Derive the layout of `baseline`'s windows."""
        n_num, n_cat = len(baseline.numeric), len(baseline.categorical)
        output = baseline.output
        sizes = {
            "bins": int(baseline.numeric_bin_offsets[-1]),
            "cats": int(baseline.categorical_offsets[-1]),
            "unseen": n_cat,
            "nan": n_num + n_cat,
            "inf": n_num + n_cat,
            "below_min": n_num,
            "above_max": n_num,
            "output": 0
            if output is None
            else (len(output.values) if output.kind == "classes" else len(output.edges) + 1),
            "confidence": 0 if output is None or not output.confidence_edges else len(output.confidence_edges) + 1,
            "latency": len(LATENCY_BUCKETS_MS) + 1,
            **{name: 1 for name in SCALAR_FIELDS},
        }
        offsets, position = {}, 0
        for name, size in sizes.items():
            offsets[name] = position
            position += size
        return cls(baseline=baseline, sizes=sizes, offsets=offsets, length=position)

    def field(self, name: str) -> slice:
        """Return the slice of counter `name` in a window vector."""
        return slice(self.offsets[name], self.offsets[name] + self.sizes[name])


@dataclass(frozen=True)
class TelemetryWindow:
    """One validated window: its identity plus its counters as a layout vector."""

    device_id: str
    window_seq: int
    window_start: float
    window_end: float
    model_name: str
    model_version: int
    baseline_id: str
    dropped_windows: int
    vector: np.ndarray


def _require(message: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SchemaError(f"field {key!r} missing or not {kind}")
    return value


def _sparse(value: Any, size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value)):
        raise SchemaError(f"{name!r} must be [[indices], [counts]]")
    if len(value[0]) != len(value[1]):
        raise SchemaError(f"{name!r}: indices and counts differ in length")
    indices = np.asarray(value[0])
    counts = np.asarray(value[1])
    if counts.size and counts.dtype.kind not in "iu":
        if counts.dtype.kind == "f":
            raise NonFiniteCount(f"{name!r}: counts must be finite integers")
        raise SchemaError(f"{name!r}: counts must be integers")
    if indices.size and indices.dtype.kind not in "iu":
        raise SchemaError(f"{name!r}: indices must be integers")
    if indices.size and (indices.min() < 0 or indices.max() >= size or np.any(np.diff(indices) <= 0)):
        raise BinMismatch(f"{name!r}: indices must increase within [0, {size})")
    if counts.size and counts.min() < 0:
        raise NegativeCount(f"{name!r}: negative count")
    return indices.astype(np.int64), counts.astype(np.int64)


def parse_window(message: Mapping[str, Any], layout: SketchLayout) -> TelemetryWindow:
    """Validate a decoded telemetry message against the layout's baseline; raise a WindowError."""
    if not isinstance(message, Mapping) or message.get("schema") != TELEMETRY_SCHEMA:
        raise SchemaError("not an edgeloop.telemetry/v1 message")
    model = _require(message, "model", dict)
    if not isinstance(model.get("name"), str) or not isinstance(model.get("version"), int):
        raise SchemaError("model must be {name: str, version: int}")
    if message.get("baseline_id") != layout.baseline.baseline_id:
        raise BaselineMismatch(f"window baseline {message.get('baseline_id')!r} is not {layout.baseline.baseline_id!r}")
    start = float(_require(message, "window_start", (int, float)))
    end = float(_require(message, "window_end", (int, float)))
    if not (np.isfinite(start) and np.isfinite(end) and end >= start):
        raise SchemaError("window_end must not precede window_start")
    vector = np.zeros(layout.length, dtype=np.int64)
    for name in SCALAR_FIELDS:
        value = message.get(name, 0)
        if isinstance(value, float):
            raise NonFiniteCount(f"{name!r} must be an integer")
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{name!r} must be an integer")
        if value < 0:
            raise NegativeCount(f"{name!r} is negative")
        vector[layout.offsets[name]] = value
    for name in SPARSE_FIELDS:
        indices, counts = _sparse(message.get(name, [[], []]), layout.sizes[name], name)
        vector[layout.offsets[name] + indices] = counts
    _check_totals(vector, layout)
    seq = _require(message, "window_seq", int)
    dropped = message.get("dropped_windows", 0)
    if seq < 0 or not isinstance(dropped, int) or dropped < 0:
        raise SchemaError("window_seq and dropped_windows must be non-negative integers")
    return TelemetryWindow(
        device_id=str(_require(message, "device_id", str)),
        window_seq=seq,
        window_start=start,
        window_end=end,
        model_name=model["name"],
        model_version=model["version"],
        baseline_id=str(message["baseline_id"]),
        dropped_windows=dropped,
        vector=vector,
    )


def _check_totals(vector: np.ndarray, layout: SketchLayout) -> None:
    baseline = layout.baseline
    n = vector[layout.offsets["n"]]
    nan, inf = vector[layout.field("nan")], vector[layout.field("inf")]
    n_num = len(baseline.numeric)
    numeric_totals: np.ndarray = (
        np.add.reduceat(vector[layout.field("bins")], baseline.numeric_bin_offsets[:-1])
        if n_num
        else np.zeros(0, dtype=np.int64)
    )
    cat_offsets = baseline.categorical_offsets[:-1]
    cat_totals = np.zeros(len(baseline.categorical), dtype=np.int64)
    for k, start in enumerate(cat_offsets):
        stop = baseline.categorical_offsets[k + 1]
        cat_totals[k] = vector[layout.offsets["cats"] + start : layout.offsets["cats"] + stop].sum()
    totals = np.concatenate([np.asarray(numeric_totals, dtype=np.int64), cat_totals + vector[layout.field("unseen")]])
    if np.any(totals + nan + inf != n):
        raise InconsistentCounts("per-feature counts do not add up to n")
    outputs = vector[layout.field("output")].sum() + vector[layout.offsets["output_unseen"]]
    if outputs > n or vector[layout.offsets["errors"]] > vector[layout.offsets["calls"]]:
        raise InconsistentCounts("more outputs than rows or more errors than calls")


@dataclass(frozen=True)
class MergedSketch:
    """The sum of many windows' vectors for one baseline."""

    layout: SketchLayout
    vector: np.ndarray
    n_windows: int

    def counts(self, name: str) -> np.ndarray:
        """Return the merged counter `name`."""
        return self.vector[self.layout.field(name)]


def merge_vectors(layout: SketchLayout, vectors: np.ndarray) -> MergedSketch:
    """Sum an (N, L) matrix of window vectors (e.g. loaded from storage) in one call."""
    matrix = np.asarray(vectors, dtype=np.int64).reshape(-1, layout.length)
    return MergedSketch(layout=layout, vector=matrix.sum(axis=0), n_windows=matrix.shape[0])


def merge_windows(layout: SketchLayout, windows: Sequence[TelemetryWindow]) -> MergedSketch:
    """Sum validated windows in place (no (N, L) copy)."""
    total = np.zeros(layout.length, dtype=np.int64)
    for window in windows:
        if window.baseline_id != layout.baseline.baseline_id:
            raise BaselineMismatch("cannot merge windows of different baselines")
        total += window.vector
    return MergedSketch(layout=layout, vector=total, n_windows=len(windows))


def _padded(flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(sizes.size), sizes)
    starts = np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    out = np.zeros((sizes.size, int(sizes.max(initial=1))), dtype=np.int64)
    out[rows, np.arange(flat.size) - starts] = flat
    return out


def _numeric_counts(baseline: Baseline, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (fine, coarse) padded count matrices for all numeric features."""
    offsets = baseline.numeric_bin_offsets
    fine = _padded(flat, np.diff(offsets))
    starts = np.concatenate(
        [
            np.concatenate([[offsets[k]], offsets[k] + np.asarray(f.coarse, dtype=np.int64) + 1])
            for k, f in enumerate(baseline.numeric)
        ]
    )
    coarse_sizes = np.array([len(f.coarse) + 1 for f in baseline.numeric])
    return fine, _padded(np.add.reduceat(flat, starts), coarse_sizes)


def detect_drift_sketch(
    sketch: MergedSketch, config: DriftConfig | None = None, *, include_output: bool = True
) -> DriftReport:
    """Test merged current counts against the baseline's reference counts, all features at once."""
    config = config or DriftConfig()
    baseline = sketch.layout.baseline
    names = [f.name for f in baseline.numeric] + [f.name for f in baseline.categorical]
    kinds: list[FeatureKind] = ["numeric"] * len(baseline.numeric)
    kinds += ["categorical"] * len(baseline.categorical)
    output = baseline.output if include_output else None
    if output is not None:
        names.append("__output__")
        kinds.append("categorical" if output.kind == "classes" else "numeric")
    arrays = FeatureArrays.empty(names, kinds)
    n_num = len(baseline.numeric)
    nonfinite = sketch.counts("nan") + sketch.counts("inf")
    arrays.nonfinite_cur[: nonfinite.size] = nonfinite
    if n_num:
        ref_flat = np.concatenate([np.asarray(f.counts, dtype=np.int64) for f in baseline.numeric])
        ref_fine, ref_coarse = _numeric_counts(baseline, ref_flat)
        cur_fine, cur_coarse = _numeric_counts(baseline, sketch.counts("bins"))
        rows = np.arange(n_num)
        arrays.n_ref[rows], arrays.n_cur[rows] = ref_fine.sum(axis=1), cur_fine.sum(axis=1)
        arrays.ks[rows], arrays.ks_upper[rows] = ks_from_counts(ref_fine, cur_fine)
        # Devices count values strictly outside the reference [min, max]: the bins cannot see them move.
        arrays.outside[rows] = sketch.counts("below_min") + sketch.counts("above_max")
        counts_into_arrays(arrays, rows, ref_coarse, cur_coarse)
        if config.method == "wasserstein":
            arrays.wasserstein[rows] = _binned_wasserstein(baseline, ref_fine, cur_fine)
    cats = sketch.counts("cats")
    unseen = sketch.counts("unseen")
    offsets = baseline.categorical_offsets
    for k, feature in enumerate(baseline.categorical):
        ref_counts = np.append(np.asarray(feature.counts, dtype=np.int64), 0)
        cur_counts = np.append(cats[offsets[k] : offsets[k + 1]], unseen[k])
        _one_categorical(arrays, n_num + k, ref_counts, cur_counts)
    if output is not None:
        ref_counts = np.append(np.asarray(output.counts, dtype=np.int64), 0)
        cur_counts = np.append(sketch.counts("output"), sketch.counts("output_unseen"))
        _one_categorical(arrays, len(names) - 1, ref_counts, cur_counts)
        if output.kind == "score":
            arrays.ks[-1:], arrays.ks_upper[-1:] = ks_from_counts(ref_counts[None, :-1], cur_counts[None, :-1])
    return assemble_report(arrays, config, "sketch")


def _one_categorical(arrays: FeatureArrays, row: int, ref_counts: np.ndarray, cur_counts: np.ndarray) -> None:
    arrays.n_ref[row], arrays.n_cur[row] = ref_counts.sum(), cur_counts.sum()
    counts_into_arrays(arrays, np.array([row]), ref_counts[None, :], cur_counts[None, :])


def _binned_wasserstein(baseline: Baseline, ref_fine: np.ndarray, cur_fine: np.ndarray) -> np.ndarray:
    """Approximate W1 / reference std from CDFs on the interior grid (open outer bins are ignored)."""
    result = np.zeros(len(baseline.numeric))
    for k, feature in enumerate(baseline.numeric):
        edges = np.asarray(feature.edges)
        # cdf[i] = F(edges[i]-); the trapezoid over [edges[i], edges[i+1]) uses both ends.
        r = np.cumsum(ref_fine[k, : edges.size]) / max(ref_fine[k].sum(), 1)
        c = np.cumsum(cur_fine[k, : edges.size]) / max(cur_fine[k].sum(), 1)
        gap = np.abs(r - c)
        result[k] = np.sum((gap[:-1] + gap[1:]) / 2 * np.diff(edges))
        result[k] /= feature.std if feature.std > 0 else 1.0
    return result

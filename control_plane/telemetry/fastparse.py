"""Validate a batch of telemetry windows at once; anything unusual falls back to drift.sketch.parse_window.

`parse_window` costs ~0.7 ms per window (ten small numpy conversions and a totals check each), which caps
one ingest process near 1,400 windows/s. Here the per-window work is plain-Python type checks and list
concatenation, and the numpy work (bounds, ordering, signs, per-feature totals) runs once per batch.
The fast path only ever *accepts*: a window it doubts is handed to `parse_window`, whose answer (window
or WindowError with its reason) is final, so both paths accept and reject exactly the same messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from control_plane.drift.sketch import (
    SCALAR_FIELDS,
    SPARSE_FIELDS,
    TELEMETRY_SCHEMA,
    SchemaError,
    SketchLayout,
    TelemetryWindow,
    WindowError,
    parse_window,
)

_INT_ONLY = {int}


def _header_ok(message: Mapping[str, Any], layout: SketchLayout) -> bool:
    """Return True when every non-count field is plainly valid (strict types; doubt means slow path)."""
    model = message.get("model")
    start: Any = message.get("window_start")
    end: Any = message.get("window_end")
    seq, dropped = message.get("window_seq"), message.get("dropped_windows", 0)
    return (
        message.get("schema") == TELEMETRY_SCHEMA
        and type(model) is dict and type(model.get("name")) is str and type(model.get("version")) is int
        and message.get("baseline_id") == layout.baseline.baseline_id
        and type(start) in (int, float) and type(end) in (int, float)
        and math.isfinite(start) and math.isfinite(end) and end >= start
        and type(seq) is int and seq >= 0 and type(dropped) is int and dropped >= 0
        and type(message.get("device_id")) is str
        and _scalars_ok(message)
    )


def _scalars_ok(message: Mapping[str, Any]) -> bool:
    for name in SCALAR_FIELDS:
        value = message.get(name, 0)
        if type(value) is not int or value < 0:
            return False
    return True


class _UntypedBatch(Exception):
    """The batch held a non-integer count that the per-element type check was told to skip."""


_FIELD_NUMBERS = tuple(enumerate(SPARSE_FIELDS))
_ABSENT: Any = object()


def parse_windows(messages: Sequence[Mapping[str, Any]], layout: SketchLayout, *,
                  bool_free: Sequence[bool] | None = None) -> list[TelemetryWindow | WindowError]:
    """Return, per message, its validated window or the WindowError `parse_window` raises for it.

    `bool_free[i]` says message i's raw JSON holds no `true`/`false` (the ingest checks the bytes). Such a
    message skips the per-element type check: any float, string or null among its counts turns the whole
    batch's numpy array away from int64, and the batch is then gathered again with the check. Booleans are
    the one type numpy would silently take for integers, hence the hint.
    """
    results: list[TelemetryWindow | WindowError | None] = [None] * len(messages)
    trusted = bool_free if bool_free is not None else [False] * len(messages)
    try:
        try:
            accepted = _check_batch(messages, *_gather(messages, layout, trusted), layout, typed=bool_free is None)
        except _UntypedBatch:
            checked = [False] * len(messages)
            accepted = _check_batch(messages, *_gather(messages, layout, checked), layout, typed=True)
    except OverflowError:  # an integer beyond int64: let the reference parser name the problem
        accepted = {}
    for position, window in accepted.items():
        results[position] = window
    for position, message in enumerate(messages):
        if results[position] is None:
            try:
                results[position] = parse_window(message, layout)
            except WindowError as error:
                results[position] = error
            except (TypeError, ValueError, OverflowError) as exc:  # the reference parser tripped on odd types
                results[position] = SchemaError(f"{type(exc).__name__}: {str(exc)[:200]}")
    return [r for r in results if r is not None]


def _gather(messages: Sequence[Mapping[str, Any]], layout: SketchLayout, trusted: Sequence[bool]
            ) -> tuple[list[int], list[Any], list[Any], list[tuple[int, int, int]]]:
    """Concatenate the sparse pairs of every plainly well-formed message; return them with their positions."""
    fast: list[int] = []
    indices: list[Any] = []
    counts: list[Any] = []
    segments: list[tuple[int, int, int]] = []  # (row in fast, field number, element count)
    for position, message in enumerate(messages):
        if type(message) is not dict or not _header_ok(message, layout):
            continue
        row = len(fast)
        row_indices: list[Any] = []
        row_counts: list[Any] = []
        row_segments = []
        get = message.get
        for number, name in _FIELD_NUMBERS:
            # Inline shape checks: this loop runs ten times per window, so no helper calls or generators,
            # and as few len() calls as the checks allow.
            value = get(name, _ABSENT)
            if value is _ABSENT:
                continue
            if type(value) is not list or len(value) != 2:
                break
            value_indices, value_counts = value
            if type(value_indices) is not list or type(value_counts) is not list:
                break
            size = len(value_indices)
            if size != len(value_counts):
                break
            if size:
                row_indices += value_indices
                row_counts += value_counts
                row_segments.append((row, number, size))
        else:
            # Exact ints only (no bools, floats or strings): map(type) runs at C speed, unlike a generator.
            if not trusted[position] and not set(map(type, row_indices)) | set(map(type, row_counts)) <= _INT_ONLY:
                continue
            fast.append(position)
            indices += row_indices
            counts += row_counts
            segments += row_segments
    return fast, indices, counts, segments


def _as_int64(values: list[Any], typed: bool) -> np.ndarray:
    if typed:
        return np.array(values, dtype=np.int64)
    try:
        array = np.array(values)
    except ValueError as exc:  # ragged nesting: someone sent a list where a count belongs
        raise _UntypedBatch from exc
    if array.size and (array.dtype != np.int64 or array.ndim != 1):
        raise _UntypedBatch
    return array.astype(np.int64, copy=False)


def _check_batch(messages: Sequence[Mapping[str, Any]], fast: list[int], indices: list[Any], counts: list[Any],
                 segments: list[tuple[int, int, int]], layout: SketchLayout, *, typed: bool
                 ) -> dict[int, TelemetryWindow]:
    rows = len(fast)
    if not rows:
        return {}
    sizes = np.array([layout.sizes[name] for name in SPARSE_FIELDS], dtype=np.int64)
    offsets = np.array([layout.offsets[name] for name in SPARSE_FIELDS], dtype=np.int64)
    local = _as_int64(indices, typed)
    values = _as_int64(counts, typed)
    seg = np.array(segments, dtype=np.int64).reshape(-1, 3)
    row_of = np.repeat(seg[:, 0], seg[:, 2])
    field_of = np.repeat(seg[:, 1], seg[:, 2])
    bad = np.zeros(rows, dtype=bool)
    invalid = (local < 0) | (local >= sizes[field_of]) | (values < 0)
    # Strictly increasing within each segment: compare neighbours that belong to the same segment.
    starts = np.zeros(local.size, dtype=bool)
    if local.size:
        starts[np.concatenate([[0], np.cumsum(seg[:, 2])[:-1]])] = True
        not_increasing = np.concatenate([[False], np.diff(local) <= 0]) & ~starts
        invalid |= not_increasing
    np.logical_or.at(bad, row_of[invalid], True)
    matrix = np.zeros((rows, layout.length), dtype=np.int64)
    ok_elements = ~bad[row_of]
    matrix[row_of[ok_elements], offsets[field_of[ok_elements]] + local[ok_elements]] = values[ok_elements]
    for name in SCALAR_FIELDS:
        matrix[:, layout.offsets[name]] = [messages[p].get(name, 0) for p in fast]
    bad |= ~_totals_ok(matrix, layout)
    return {
        position: TelemetryWindow(
            device_id=str(messages[position]["device_id"]), window_seq=int(messages[position]["window_seq"]),
            window_start=float(messages[position]["window_start"]), window_end=float(messages[position]["window_end"]),
            model_name=messages[position]["model"]["name"], model_version=messages[position]["model"]["version"],
            baseline_id=str(messages[position]["baseline_id"]),
            dropped_windows=int(messages[position].get("dropped_windows", 0)), vector=matrix[row].copy(),
        )
        for row, position in enumerate(fast) if not bad[row]
    }


def _totals_ok(matrix: np.ndarray, layout: SketchLayout) -> np.ndarray:
    """Vectorised `_check_totals` of drift.sketch: every feature adds up to n; outputs <= n; errors <= calls."""
    baseline = layout.baseline
    n = matrix[:, layout.offsets["n"]]
    nonfinite = matrix[:, layout.field("nan")] + matrix[:, layout.field("inf")]
    totals = []
    bins = matrix[:, layout.field("bins")]
    bin_offsets = baseline.numeric_bin_offsets
    for k in range(len(baseline.numeric)):
        totals.append(bins[:, bin_offsets[k] : bin_offsets[k + 1]].sum(axis=1))
    cats = matrix[:, layout.field("cats")]
    unseen = matrix[:, layout.field("unseen")]
    cat_offsets = baseline.categorical_offsets
    for k in range(len(baseline.categorical)):
        totals.append(cats[:, cat_offsets[k] : cat_offsets[k + 1]].sum(axis=1) + unseen[:, k])
    ok = np.ones(matrix.shape[0], dtype=bool)
    if totals:
        ok &= np.all(np.column_stack(totals) + nonfinite == n[:, None], axis=1)
    outputs = matrix[:, layout.field("output")].sum(axis=1) + matrix[:, layout.offsets["output_unseen"]]
    ok &= (outputs <= n) & (matrix[:, layout.offsets["errors"]] <= matrix[:, layout.offsets["calls"]])
    return ok

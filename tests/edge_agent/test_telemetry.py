"""The device-side window recorder: binning, counters, window rolling, privacy of the message."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from control_plane.drift.baseline import Baseline, build_baseline
from edge_agent.telemetry import LATENCY_BUCKETS_MS, TELEMETRY_SCHEMA, EdgeBaseline, WindowRecorder


class Sink:
    """Collect windows in memory; report a configurable number of dropped windows once."""

    def __init__(self, dropped: int = 0) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seq = 100
        self.dropped = dropped

    def next_window_seq(self) -> int:
        self.seq += 1
        return self.seq

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped

    def put(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    rng = np.random.default_rng(0)
    reference = np.column_stack([rng.normal(size=(4000, 2)), rng.integers(0, 3, 4000)])
    scores = rng.dirichlet(np.ones(3), size=4000)
    return build_baseline(reference, categorical=[2], labels=scores.argmax(axis=1), scores=scores)


def _recorder(baseline: Baseline, sink: Sink, clock: list[float]) -> WindowRecorder:
    return WindowRecorder(
        baseline.to_dict(),
        device_id="dev-7",
        model_name="digits",
        model_version=3,
        sink=sink,
        window_seconds=60,
        clock=lambda: clock[0],
    )


def _unflatten(pair: list[list[int]], size: int) -> np.ndarray:
    dense = np.zeros(size, dtype=np.int64)
    dense[pair[0]] = pair[1]
    return dense


def test_counts_match_per_row_binning(baseline: Baseline) -> None:
    rng = np.random.default_rng(1)
    inputs = np.column_stack([rng.normal(0.3, 1, size=(500, 2)), rng.integers(0, 4, 500)])
    inputs[:7, 0] = np.nan
    inputs[7:9, 1] = -np.inf
    inputs[9, 0] = 99.0
    labels = rng.integers(0, 4, 500)
    scores = rng.dirichlet(np.ones(3), size=500)
    sink, clock = Sink(dropped=4), [0.0]
    recorder = _recorder(baseline, sink, clock)
    for start in range(0, 500, 125):
        part = slice(start, start + 125)
        recorder.observe(inputs[part], labels[part], scores[part], 0.0042, error=False)
    recorder.observe(inputs[:0], np.array([]), None, 0.3, error=True)
    message = recorder.close_window()
    assert message is not None and sink.messages == [message]
    assert message["schema"] == TELEMETRY_SCHEMA and message["window_seq"] == 101
    assert message["dropped_windows"] == 4 and message["baseline_id"] == baseline.baseline_id
    assert (message["n"], message["calls"], message["errors"]) == (500, 5, 1)
    offsets = baseline.numeric_bin_offsets
    bins = _unflatten(message["bins"], int(offsets[-1]))
    for k, feature in enumerate(baseline.numeric):
        column = inputs[:, k]
        column = column[np.isfinite(column)]
        expected_counts = np.zeros(len(feature.edges) + 1, dtype=np.int64)
        for value in column:
            expected_counts[int(np.sum(np.asarray(feature.edges) <= value))] += 1
        assert bins[offsets[k] : offsets[k + 1]].tolist() == expected_counts.tolist()
    assert _unflatten(message["nan"], 3).tolist() == [7, 0, 0]
    assert _unflatten(message["inf"], 3).tolist() == [0, 2, 0]
    for k, feature in enumerate(baseline.numeric):
        column = inputs[:, k]
        assert _unflatten(message["above_max"], 2)[k] == np.sum(np.isfinite(column) & (column > feature.max))
        assert _unflatten(message["below_min"], 2)[k] == np.sum(np.isfinite(column) & (column < feature.min))
    assert _unflatten(message["above_max"], 2)[0] >= 1
    assert _unflatten(message["unseen"], 1).tolist() == [int(np.sum(inputs[:, 2] == 3))]
    assert _unflatten(message["cats"], 3).tolist() == [int(np.sum(inputs[:, 2] == v)) for v in range(3)]
    assert _unflatten(message["output"], 3).tolist() == [int(np.sum(labels == v)) for v in range(3)]
    assert message["output_unseen"] == int(np.sum(labels == 3))
    assert sum(message["confidence"][1]) == 500
    latency = _unflatten(message["latency"], len(LATENCY_BUCKETS_MS) + 1)
    assert latency[LATENCY_BUCKETS_MS.index(5)] == 4 and latency[LATENCY_BUCKETS_MS.index(500)] == 1


def test_message_carries_no_raw_values(baseline: Baseline) -> None:
    rng = np.random.default_rng(2)
    inputs = np.column_stack([rng.normal(size=(50, 2)) + 0.123456789, np.zeros(50)])
    sink, clock = Sink(), [0.0]
    recorder = _recorder(baseline, sink, clock)
    recorder.observe(inputs, np.zeros(50), rng.dirichlet(np.ones(3), size=50), 0.001, error=False)
    message = recorder.close_window()
    assert message is not None
    text = json.dumps(message)
    assert "123456" not in text
    numbers = [v for key, v in message.items() if isinstance(v, list) for part in v for v in part]
    assert all(isinstance(v, int) for v in numbers)
    assert set(message) == {
        "schema", "device_id", "window_seq", "window_start", "window_end", "model", "baseline_id", "n", "calls",
        "errors", "dropped_windows", "bins", "cats", "unseen", "nan", "inf", "below_min", "above_max", "output",
        "output_unseen", "confidence", "latency",
    }  # fmt: skip


def test_windows_roll_on_the_clock_and_skip_empty_ones(baseline: Baseline) -> None:
    sink, clock = Sink(), [1000.0]
    recorder = _recorder(baseline, sink, clock)
    row = np.zeros((1, 3))
    recorder.observe(row, np.zeros(1), None, 0.001, error=False)
    clock[0] = 1059.9
    assert recorder.tick() is None
    recorder.observe(row, np.zeros(1), None, 0.001, error=False)
    clock[0] = 1060.0
    first = recorder.tick()
    assert first is not None and (first["window_start"], first["window_end"], first["n"]) == (1000.0, 1060.0, 2)
    clock[0] = 1250.0  # three quiet windows pass: nothing is emitted for them
    assert recorder.tick() is None
    recorder.observe(row, np.zeros(1), None, 0.001, error=False)
    clock[0] = 1300.0
    second = recorder.tick()
    assert second is not None and (second["window_start"], second["window_end"]) == (1240.0, 1300.0)
    assert [m["window_seq"] for m in sink.messages] == [101, 102]


def test_score_output_and_edge_baseline_parsing(baseline: Baseline) -> None:
    rng = np.random.default_rng(3)
    regression = build_baseline(rng.normal(size=(1000, 2)), scores=rng.normal(size=1000))
    sink, clock = Sink(), [0.0]
    recorder = WindowRecorder(
        regression.to_dict(), device_id="d", model_name="r", model_version=1, sink=sink, clock=lambda: clock[0]
    )
    scores = np.array([np.nan, -100.0, 0.0, 100.0])
    recorder.observe(np.zeros((4, 2)), scores, scores, 0.01, error=False)
    message = recorder.close_window()
    assert message is not None and message["output_unseen"] == 1 and sum(message["output"][1]) == 3
    with pytest.raises(ValueError):
        EdgeBaseline.from_dict({"schema": "edgeloop.baseline/v1"})


def test_single_rows_and_one_large_batch_count_the_same(baseline: Baseline) -> None:
    rng = np.random.default_rng(4)
    inputs = np.column_stack([rng.normal(size=(3000, 2)), rng.integers(0, 3, 3000)])
    inputs[::17, 1] = np.nan
    inputs[::29, 0] = -np.inf
    messages = []
    for batches in (np.array_split(np.arange(3000), 3000), [np.arange(3000)]):
        sink, clock = Sink(), [0.0]
        recorder = _recorder(baseline, sink, clock)
        for rows in batches:  # one row at a time (broadcast path), then one batch (searchsorted path)
            recorder.observe(inputs[rows], np.zeros(rows.size), None, 0.001, error=False)
        messages.append(recorder.close_window())
    single, batch = messages
    assert single is not None and batch is not None
    for key in ("bins", "nan", "inf", "below_min", "above_max", "cats", "unseen", "n"):
        assert single[key] == batch[key], key

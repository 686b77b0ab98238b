"""Shared fixtures: a baseline and telemetry windows produced by the real edge recorder."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from control_plane.drift.baseline import Baseline, build_baseline
from edge_agent.telemetry import WindowRecorder


class ListSink:
    """In-memory telemetry sink: numbers windows and keeps them."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seq = 0

    def next_window_seq(self) -> int:
        self.seq += 1
        return self.seq

    def take_dropped(self) -> int:
        return 0

    def put(self, message: dict[str, Any]) -> None:
        self.messages.append(json.loads(json.dumps(message)))


def make_reference(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.normal(size=n),
            rng.exponential(size=n),
            rng.uniform(-1, 1, size=n),
            rng.integers(0, 5, n).astype(float),  # categorical
        ]
    )


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    reference = make_reference(20_000)
    labels = (reference[:, 0] > 0).astype(int)
    return build_baseline(reference, feature_names=["a", "b", "c", "cat"], categorical=[3], labels=labels)


def record_windows(baseline: Baseline, current: np.ndarray, *, batch: int = 100, per_window: int = 10) -> list[dict]:
    """Feed `current` through a WindowRecorder on a fake clock and return the closed windows."""
    sink = ListSink()
    now = [1_000.0]
    recorder = WindowRecorder(
        baseline.to_dict(),
        device_id="dev-1",
        model_name="m",
        model_version=1,
        sink=sink,
        window_seconds=60,
        clock=lambda: now[0],
    )
    for i, start in enumerate(range(0, current.shape[0], batch)):
        rows = current[start : start + batch]
        recorder.observe(rows, (rows[:, 0] > 0).astype(int), None, 0.002, error=False)
        if (i + 1) % per_window == 0:
            now[0] += 60
    recorder.close_window()
    return sink.messages

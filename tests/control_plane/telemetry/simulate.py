"""Test helpers: a reference baseline, devices that record real windows with edge_agent's WindowRecorder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline, build_baseline
from control_plane.registry import service as registry
from control_plane.registry.schemas import DatasetCreate, ModelCreate, VersionCreate
from edge_agent.telemetry import WindowRecorder

FEATURES = ["temperature", "pressure", "vibration", "humidity", "mode"]
CATEGORICAL = [4]
MODEL = "sensor-clf"


def reference_data(rows: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return reference inputs (4 numeric + 1 categorical column) and the model's labels on them."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([
        rng.normal(20.0, 5.0, rows), rng.normal(1000.0, 50.0, rows), rng.gamma(2.0, 1.5, rows),
        rng.uniform(10.0, 90.0, rows), rng.integers(0, 4, rows).astype(np.float64),
    ])
    return x, predict(x)


def predict(x: np.ndarray) -> np.ndarray:
    """A fixed toy model: 3 classes from temperature and vibration."""
    return (x[:, 0] > 22).astype(np.int64) + (x[:, 2] > 4).astype(np.int64)


def make_baseline(seed: int = 0) -> Baseline:
    """Build the reference baseline of the toy model."""
    x, labels = reference_data(seed=seed)
    return build_baseline(x, feature_names=FEATURES, categorical=CATEGORICAL, labels=labels)


def register_baseline(database: Database, baseline: Baseline, name: str = "sensors") -> str:
    """Register a dataset carrying the baseline; return its id."""
    with database.transaction() as session:
        dataset = registry.create_dataset(
            session=session, actor="test", request=DatasetCreate(
                name=name, version="1", fingerprint=baseline.baseline_id.ljust(12, "0"),
                baseline=baseline.to_dict()))
        return dataset.id


def register_model(database: Database, name: str = MODEL, versions: int = 1) -> None:
    """Register `name` with versions 1..`versions` (the ingest quarantines windows of unregistered models)."""
    with database.transaction() as session:
        registry.create_model(session=session, request=ModelCreate(name=name), actor="test")
        for _ in range(versions):
            registry.create_version(session=session, model_name=name, request=VersionCreate(), actor="test")


@dataclass
class ListSink:
    """A TelemetrySink that keeps closed windows in memory."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def next_window_seq(self) -> int:
        self.seq += 1
        return self.seq

    def take_dropped(self) -> int:
        return 0

    def put(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@dataclass
class SimDevice:
    """One simulated device: a real WindowRecorder fed by the toy model on synthetic inputs."""

    device_id: str
    baseline: Baseline
    sink: Any
    seed: int
    start: float
    version: int = 1
    recorder: WindowRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.now = self.start
        self.recorder = WindowRecorder(self.baseline.to_dict(), device_id=self.device_id, model_name=MODEL,
                                       model_version=self.version, sink=self.sink, window_seconds=60.0,
                                       clock=lambda: self.now)

    def run_window(self, rows: int = 200, shift: dict[int, float] | None = None,
                   scale: dict[int, float] | None = None, errors: int = 0) -> dict[str, Any] | None:
        """Observe `rows` inputs in batches of 20 during the next 60 s window and close it."""
        start = self.now
        x, _ = reference_data(rows, seed=int(self.rng.integers(1 << 31)))
        for column, delta in (shift or {}).items():
            x[:, column] += delta
        for column, factor in (scale or {}).items():
            x[:, column] *= factor
        for i, batch in enumerate(np.array_split(x, max(rows // 20, 1))):
            self.recorder.observe(batch, predict(batch), None, 0.002 + 0.001 * (i % 3), error=i < errors)
        self.now = start + 60.0
        return self.recorder.close_window(now=self.now)


def encode(message: dict[str, Any]) -> bytes:
    """Encode a window as the device does."""
    return json.dumps(message, separators=(",", ":")).encode()

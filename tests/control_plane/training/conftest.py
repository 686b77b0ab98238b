"""Training fixtures: a small registered digits champion, stored telemetry windows of a cohort, labelled rows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from control_plane.db.session import Database
from control_plane.registry import pipeline
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.telemetry.models import TelemetryWindowRow

MODEL = "digits-small"
HIDDEN = (32,)


def drifted(rows: np.ndarray) -> np.ndarray:
    """The demo's covariate drift (control_plane.demo_loop): lower contrast, raised black level."""
    return np.clip(rows * 0.5 + 6.0, 0.0, 16.0)


@pytest.fixture(scope="session")
def small_estimator() -> Any:
    """The champion's estimator, trained once per session (a 32-unit MLP: fast, and honest about the data)."""
    return pipeline.train_mlp(pipeline.load_sklearn_dataset("digits"), hidden=HIDDEN)


@pytest.fixture
def champion(settings: Settings, database: Database, small_estimator: Any) -> pipeline.PipelineResult:
    """Register v1 of the small model with its dataset, run, fp32 and int8 artifacts (the demo's pipeline)."""
    with database.transaction() as session:
        return pipeline.register_quantized_model(
            session=session, store=ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes),
            actor="admin:test", model_name=MODEL, data=pipeline.load_sklearn_dataset("digits"),
            estimator=small_estimator, params={"hidden": list(HIDDEN), "dataset": "digits",
                                               "quantization": "dynamic"})


def store_windows(database: Database, group: str, count: int, *, prefix: str = "dev",
                  start: float | None = None) -> list[tuple[str, int]]:
    """Store telemetry windows of the champion in ``group`` (identity only: the rows are posted separately)."""
    start = time.time() - 600 if start is None else start
    keys = [(f"{prefix}-{group}-{i % 3}", 1000 + i) for i in range(count)]
    with database.transaction() as session:
        session.add_all([TelemetryWindowRow(
            device_id=device, window_seq=seq, model_name=MODEL, model_version=1, baseline_id="b" * 16,
            window_start=start + i, window_end=start + i + 1, received_at=start + i + 1, device_group=group,
            n=50, calls=50, errors=0, dropped_windows=0, sketch="[[],[]]") for i, (device, seq) in enumerate(keys)])
    return keys


def labelled_rows(keys: list[tuple[str, int]], *, drift: bool, per_window: int = 50, offset: int = 0
                  ) -> dict[str, Any]:
    """Digits rows (drifted like the demo's group, or not) with their true labels, one slice per window."""
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    windows = []
    for i, (device, seq) in enumerate(keys):
        rows = slice(offset + i * per_window, offset + (i + 1) * per_window)
        features = drifted(x[rows]) if drift else x[rows]
        windows.append({"device_id": device, "window_seq": seq, "features": features.tolist(),
                        "labels": [int(v) for v in y[rows]]})
    return {"windows": windows}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a training worker that looks for jobs often."""
    settings.training_poll_seconds = 0.1
    return settings

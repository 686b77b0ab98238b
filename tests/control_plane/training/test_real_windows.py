"""The whole data path with real parts: an edge WindowRecorder's windows through the HTTP ingest, the rows the
device was fed posted for those windows, an approved retrain, a challenger that wins, a canary to the group."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from control_plane.db.session import Database
from control_plane.registry import onnx_tools, pipeline
from control_plane.registry.models import Artifact, Dataset
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.training.labelling import RowRecorder, post_recorded_rows
from edge_agent.telemetry import MemorySink, WindowRecorder
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import provision
from tests.control_plane.training.conftest import MODEL, drifted
from tests.control_plane.training.test_retrain_flow import approved_retrain, finished_job, incident

WINDOW_SECONDS, WINDOWS, BATCH = 10.0, 8, 25


class Clock:
    """A device clock the test moves (the windows it closes are still real windows)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_windows_recorded_on_a_device_carry_the_rows_that_retrain_the_model(
        client: TestClient, database: Database, settings: Settings, champion: pipeline.PipelineResult,
        make_headers: TokenFactory) -> None:
    operator, reader = make_headers("operator", name="ops"), make_headers("viewer")
    device = provision(client, operator, "cam-1", group="b")
    device_headers = {"Authorization": f"Bearer {device['edge_config']['device_token']}"}
    with database.transaction(write=False) as session:
        dataset, artifact = session.get(Dataset, champion.dataset_id), session.get(Artifact, champion.int8_artifact_id)
        assert dataset is not None and dataset.baseline and artifact is not None
        baseline: dict[str, Any] = dataset.baseline
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    model = onnx_tools.make_session(store.open_existing(artifact.sha256).read_bytes())
    clock, sink, rows = Clock(time.time() - WINDOWS * WINDOW_SECONDS - 30), MemorySink(), RowRecorder()
    recorder = WindowRecorder(baseline, device_id="cam-1", model_name=MODEL, model_version=1, sink=sink,
                              window_seconds=WINDOW_SECONDS, clock=clock)
    digits = load_digits()
    x, y = drifted(digits.data.astype(np.float32)), digits.target
    for step in range(WINDOWS * 2):  # two batches per window
        batch = slice(step * BATCH, (step + 1) * BATCH)
        clock.now += WINDOW_SECONDS / 2
        rows.record("cam-1", x[batch], y[batch], at=clock.now - 0.01)  # fed just before the call is counted
        recorder.observe(x[batch], onnx_tools.predict_labels(model, x[batch]), None, 0.001, False)
    clock.now += WINDOW_SECONDS
    recorder.tick()
    ingested = client.post("/api/v1/telemetry/windows", headers=device_headers, json=sink.messages)
    assert ingested.status_code == 200 and ingested.json()["stored"] == len(sink.messages) >= WINDOWS - 1, \
        ingested.text

    client.headers.update(operator)
    totals = post_recorded_rows(client, rows, ["cam-1"])
    # Every batch lands in a stored window (one fed right before a window closes counts in the closing one).
    assert totals["stored_rows"] == WINDOWS * 2 * BATCH and totals["stored_windows"] >= WINDOWS - 1

    job = finished_job(client, reader, approved_retrain(client, make_headers, incident(client, operator), "b")[
        "result"]["training_job_id"])
    assert job["state"] == "succeeded" and job["outcome"] == "canary_proposed", job
    assert job["data"]["devices"] == ["cam-1"] and job["data"]["labelled_windows"] == totals["stored_windows"]
    assert job["comparison"]["decision"]["champion_recent"] < job["comparison"]["decision"]["challenger_recent"]

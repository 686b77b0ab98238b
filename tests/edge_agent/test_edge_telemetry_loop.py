"""The running agent ships telemetry windows for its active model through the outbox, in order and exact."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from control_plane.drift.baseline import build_baseline
from edge_agent.daemon import EdgeAgent
from edge_agent.outbox import ACK_SCHEMA, ack_topic
from edge_agent.telemetry_loop import TelemetryLoop
from tests.edge_agent.edge_support import Harness, ModelArtifact, Observer


@pytest.fixture(scope="module")
def digits_baseline() -> dict[str, Any]:
    features = load_digits().data.astype(np.float32)
    return build_baseline(features[:1000], feature_names=[f"px{i}" for i in range(64)],
                          labels=load_digits().target[:1000]).to_dict()


def windows_for(observer: Observer, device_id: str) -> list[dict[str, Any]]:
    with observer.cond:
        return [w for w in observer.telemetry if w["device_id"] == device_id]


def test_windows_follow_the_active_model(agent_factory: Callable[..., EdgeAgent], harness: Harness,
                                         observer: Observer, models: dict[str, ModelArtifact],
                                         digits_baseline: dict[str, Any]) -> None:
    agent = agent_factory()
    device = agent.config.device_id
    loop = TelemetryLoop(agent, interval_s=0.1)
    loop.start()
    try:
        model = models["v1_int8"]
        manifest = harness.manifest(device, 1, model, baseline=digits_baseline, telemetry={"window_seconds": 1})
        harness.publish(device, manifest)
        observer.wait_status(device, "activated", 1)

        rows = load_digits().data.astype(np.float32)[1000:1050]
        for batch in np.array_split(rows, 5):
            agent.engine.predict(batch)
        observer.wait(lambda: sum(w["n"] for w in windows_for(observer, device)) == 50, timeout=20)
        windows = windows_for(observer, device)
        assert [w["window_seq"] for w in windows] == list(range(1, len(windows) + 1))
        first = windows[0]
        assert first["model"] == {"name": model.name, "version": model.version}
        assert first["baseline_id"] == digits_baseline["baseline_id"]
        assert sum(w["calls"] for w in windows) == 5 and all(w["errors"] == 0 for w in windows)
        # No raw feature values leave the device: only counts per reference bin.
        assert "inputs" not in first and all(isinstance(pair, list) for pair in first["bins"])
        # A PUBACK is not enough: rows leave the on-disk outbox only once the control plane confirms them.
        observer.wait(lambda: loop.outbox.inflight() == len(windows), timeout=10)
        assert len(loop.outbox) == len(windows)
        confirmation = {"schema": ACK_SCHEMA, "seqs": [w["window_seq"] for w in windows]}
        observer.client.publish(ack_topic(device), json.dumps(confirmation), qos=1)
        observer.wait(lambda: len(loop.outbox) == 0, timeout=10)
    finally:
        loop.stop()


def test_a_model_without_baseline_sends_nothing(agent_factory: Callable[..., EdgeAgent], harness: Harness,
                                                observer: Observer, models: dict[str, ModelArtifact]) -> None:
    agent = agent_factory()
    loop = TelemetryLoop(agent, interval_s=0.1)
    loop.start()
    try:
        harness.publish(agent.config.device_id, harness.manifest(agent.config.device_id, 1, models["v1_int8"]))
        observer.wait_status(agent.config.device_id, "activated", 1)
        agent.engine.predict(models["v1_int8"].inputs)
        assert loop.recorder is None
    finally:
        loop.stop()
    assert windows_for(observer, agent.config.device_id) == []

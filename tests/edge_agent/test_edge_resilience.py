"""Broker restarts and kill -9 of a real agent process at every step of an update."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.mqtt.broker import free_port
from edge_agent.daemon import EdgeAgent

pytestmark = pytest.mark.mqtt
REPO = Path(__file__).resolve().parents[2]


def _until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
    return result


def test_broker_stopped_mid_download(agent_factory: Callable[..., EdgeAgent], private_broker: Any) -> None:
    setup = private_broker
    harness = setup.harness
    agent = agent_factory(broker_=setup.broker)
    device_id = agent.config.device_id
    harness.deploy(agent, 1, harness.models["v1_zipmap"])
    v2 = harness.models["v2_int8"]
    manifest = harness.manifest(device_id, 2, v2)
    fault = harness.fault(manifest, gate_at=len(v2.data) // 2)
    harness.publish(device_id, manifest)
    assert fault.reached.wait(20)
    setup.broker.stop()
    _until(lambda: not agent.link.connected.is_set())
    fault.release.set()
    # The update finishes while the broker is down and inference never stops.
    _until(lambda: agent.engine.runtime is not None and agent.engine.runtime.info["sha256"] == v2.sha256)
    harness.assert_serving(agent, v2)
    setup.broker.start()
    event = setup.observer.wait_status(device_id, "activated", 2)
    assert event["slot"] == "b"
    # Resubscribed after the reconnect: the next manifest is applied too.
    harness.deploy(agent, 3, harness.models["v1_plain"])
    harness.assert_serving(agent, harness.models["v1_plain"])


class AgentProcess:
    """The real `python -m edge_agent` in a subprocess, configured through EDGELOOP_EDGE_* variables."""

    def __init__(self, env: dict[str, str], pause_at: str | None = None) -> None:
        full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        if pause_at:
            full["EDGELOOP_EDGE_TEST_PAUSE_AT"] = pause_at
        self.process = subprocess.Popen([sys.executable, "-m", "edge_agent", "--log-level", "WARNING"], env=full)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _env(agent: EdgeAgent, predict_port: int) -> dict[str, str]:
    config = agent.config
    return {
        "EDGELOOP_EDGE_DEVICE_ID": config.device_id, "EDGELOOP_EDGE_DEVICE_TOKEN": config.device_token,
        "EDGELOOP_EDGE_BROKER_URL": config.broker_url, "EDGELOOP_EDGE_CONTROL_PLANE_URL": config.control_plane_url,
        "EDGELOOP_EDGE_STATE_DIR": str(config.state_dir), "EDGELOOP_EDGE_TRUSTED_PUBLIC_KEY": config.trusted_public_key,
        "EDGELOOP_EDGE_PREDICT_PORT": str(predict_port), "EDGELOOP_EDGE_DOWNLOAD_BACKOFF_S": "0.05",
        "EDGELOOP_EDGE_RECONNECT_MIN_S": "1", "EDGELOOP_EDGE_OTA_RETRY_BACKOFF_S": "0.05",
    }


def _predict(port: int, rows: np.ndarray) -> dict[str, Any]:
    def ask() -> dict[str, Any] | None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                         data=json.dumps({"inputs": rows.tolist()}).encode())
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return dict(json.load(response))
        except OSError:
            return None
    return dict(_until(ask))


@pytest.fixture
def v1_state(agent_factory: Callable[..., EdgeAgent], harness: Any) -> EdgeAgent:
    """A state dir holding committed v1 (installed in-process, then the agent is stopped)."""
    agent = agent_factory()
    harness.deploy(agent, 1, harness.models["v1_zipmap"])
    agent.stop()
    return agent


@pytest.mark.parametrize(
    ("pause_at", "expected_state", "expected_reason", "serving"),
    [
        ("downloaded", "activated", None, "v2_int8"),  # no trial yet: resumed from the retained manifest
        # The trial was cut short by the agent's crash, not by the model: retried after a back-off.
        ("before_commit", "activated", None, "v2_int8"),
        ("after_commit", "activated", None, "v2_int8"),  # the pointer was switched: the commit stands
    ],
)
def test_kill9_during_the_update_leaves_a_valid_model(
    v1_state: EdgeAgent, harness: Any, pause_at: str, expected_state: str, expected_reason: str | None,
    serving: str,
) -> None:
    device_id = v1_state.config.device_id
    state_dir = Path(v1_state.config.state_dir)
    port = free_port()
    env = _env(v1_state, port)
    first = AgentProcess(env, pause_at=pause_at)
    try:
        harness.publish(device_id, harness.manifest(device_id, 2, harness.models["v2_int8"]))
        _until(lambda: (state_dir / f"paused-{pause_at}").exists())
    finally:
        first.kill9()
    second = AgentProcess(env)
    try:
        events = harness.observer.wait(lambda: [
            e for e in harness.observer.statuses(device_id) if e["sequence"] == 2 and e["state"] == expected_state])
        assert events[-1]["reason"] == expected_reason
        model = harness.models[serving]
        answer = _predict(port, model.inputs)
        assert answer["labels"] == model.labels
        assert answer["model"] == {"name": "digits-mlp", "version": model.version}
        active = json.loads((state_dir / "active.json").read_text())
        assert active["sha256"] == model.sha256
        assert not (state_dir / "trial.json").exists()
        # The device still takes the next update.
        harness.publish(device_id, harness.manifest(device_id, 3, harness.models["v2_plain"]))
        harness.observer.wait_status(device_id, "activated", 3)
        assert _predict(port, harness.models["v2_plain"].inputs)["labels"] == harness.models["v2_plain"].labels
    finally:
        second.stop()


def test_kill9_mid_download_resumes_from_the_partial_file(v1_state: EdgeAgent, harness: Any) -> None:
    device_id = v1_state.config.device_id
    state_dir = Path(v1_state.config.state_dir)
    port = free_port()
    v2 = harness.models["v2_int8"]
    manifest = harness.manifest(device_id, 2, v2)
    gate = len(v2.data) // 2
    fault = harness.fault(manifest, gate_at=gate)
    partial = state_dir / "slots" / "b" / f"{v2.sha256}.partial"
    first = AgentProcess(_env(v1_state, port))
    try:
        harness.publish(device_id, manifest)
        assert fault.reached.wait(20)
        _until(lambda: partial.exists() and partial.stat().st_size == gate)
        harness.observer.wait(lambda: harness.observer.presence.get(device_id, {}).get("online"))
    finally:
        first.kill9()
    # The broker publishes the retained last will as soon as the killed process's socket closes.
    will = harness.observer.wait(
        lambda: (p := harness.observer.presence.get(device_id)) and not p["online"] and p)
    assert will["model"] == {"name": "digits-mlp", "version": 1} and will["slot"] == "a"
    fault.gate_at = None
    second = AgentProcess(_env(v1_state, port))
    try:
        harness.observer.wait_status(device_id, "activated", 2)
        path = manifest["artifact"]["url"].removeprefix(harness.server.base)
        assert f"bytes={gate}-" in [r["range"] for r in harness.server.requests if r["path"] == path]
        assert _predict(port, v2.inputs)["labels"] == v2.labels
    finally:
        fault.release.set()
        second.stop()

"""End to end shadow: control plane + authenticated mosquitto + real `python -m edge_agent` processes.

Two devices serve v1 under live traffic; a shadow deployment of v2 stages it and scores every input with it;
their telemetry windows carry shadow sketches; the comparison API shows agreement with confidence intervals;
the promotion gate passes and the waved canary installs v2. Then a candidate that is over its latency budget
is stopped on the devices (which keep serving), the gate fails with the reason and no canary starts.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.drift.baseline import build_baseline
from control_plane.mqtt.broker import free_port
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e.test_ota_rollout import (  # noqa: F401 - fixtures are found by name
    ControlPlane,
    _device_health,
    _start_agent,
    control_plane,
    fleet_models,
    private_broker,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
DEVICES = ("sh-a", "sh-b")


@pytest.fixture(autouse=True)
def _short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ask devices for 2-second telemetry windows (autouse: set before the control plane reads its settings)."""
    monkeypatch.setenv("EDGELOOP_FLEET_TELEMETRY_WINDOW_SECONDS", "2")


def _register(cp: ControlPlane, version: int, data: bytes, dataset_id: str) -> None:
    cp.http.post(f"{cp.url}/api/v1/models", json={"name": "digits"}, headers=cp.headers["operator"])
    run = cp.call("POST", "/runs", json={"name": f"digits-v{version}", "dataset_id": dataset_id})
    cp.call("POST", "/models/digits/versions", json={"version": version, "run_id": run["id"]})
    blob = cp.http.post(f"{cp.url}/api/v1/artifacts", content=data, headers=cp.headers["operator"]).json()
    cp.call("POST", f"/models/digits/versions/{version}/artifacts", json={"sha256": blob["sha256"],
                                                                         "quantization": "int8"})


def _traffic(ports: list[int], rows: np.ndarray, stop: threading.Event) -> None:
    rng = np.random.default_rng(0)
    while not stop.wait(0.05):
        for port in ports:
            batch = rows[rng.integers(0, len(rows), 8)].tolist()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/predict",
                                             data=json.dumps({"inputs": batch}).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
            except OSError:
                pass  # a device between models answers 503 for a moment


def _shadow(cp: ControlPlane, rollout_id: str) -> dict[str, Any]:
    return dict(cp.call("GET", f"/fleet/rollouts/{rollout_id}/shadow"))


def test_shadow_gate_passes_into_a_canary_and_blocks_a_slow_candidate(
        control_plane: ControlPlane, fleet_models: FleetModels, tmp_path: Path) -> None:  # noqa: F811
    from sklearn.datasets import load_digits

    cp = control_plane
    digits = load_digits()
    rows = digits.data.astype(np.float32)
    baseline = build_baseline(rows[:1000], labels=digits.target[:1000]).to_dict()
    dataset = cp.call("POST", "/datasets", json={"name": "digits", "version": "1", "fingerprint": "digits-e2e-1",
                                                  "baseline": baseline})
    _register(cp, 1, fleet_models.v1_int8, dataset["id"])
    _register(cp, 2, fleet_models.v2_int8, dataset["id"])
    agents: list[subprocess.Popen[bytes]] = []
    ports = {device: free_port() for device in DEVICES}
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(list(ports.values()), rows[1000:], stop), daemon=True)
    try:
        for device in DEVICES:
            provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "sh"})
            (tmp_path / "agents" / device).mkdir(parents=True)
            agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
        wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "sh"})),
                 timeout=40, interval=0.2)
        first = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                           "selector": {"group": "sh"}})
        assert cp.wait_state(first["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        traffic.start()

        # Bad strategies are refused before anything is sent.
        for strategy in ({"kind": "shadow", "shadow": {"sample_rate": 0}},
                         {"kind": "shadow", "gate": {"min_agreement": 1.5}},
                         {"kind": "shadow", "then_waves": [50, 20]},
                         {"kind": "waves", "waves": [100], "gate": {"min_agreement": 0.9}}):
            response = cp.http.post(f"{cp.url}/api/v1/fleet/deployments", headers=cp.headers["operator"], json={
                "model": "digits", "version": 2, "selector": {"group": "sh"}, "strategy": strategy})
            assert response.status_code == 422, (strategy, response.text)

        shadow = cp.call("POST", "/fleet/deployments", json={
            "model": "digits", "version": 2, "selector": {"group": "sh"},
            "strategy": {"kind": "shadow", "shadow": {"sample_rate": 1.0, "max_latency_ms": 1000},
                         "gate": {"min_agreement": 0.5, "max_latency_ms": 250, "min_windows": 3},
                         "then_waves": [50, 100], "failure_threshold": 0.0}})
        assert shadow["kind"] == "shadow" and shadow["wave_plan"] == [2]
        passed = cp.wait_state(shadow["id"], "succeeded", "failed", "aborted", timeout=90)
        assert passed["state"] == "succeeded" and "shadow gate passed" in passed["reason"], passed
        report = _shadow(cp, shadow["id"])
        assert report["verdict"] == "pass" and report["windows"] >= 3 and report["candidate"]["version"] == 2
        (cohort,) = report["cohorts"]
        assert cohort["cohort"] == "sh" and cohort["devices"] == 2 and cohort["rows"] > 0
        agreement = cohort["agreement"]
        assert 0.5 <= agreement["lower"] <= agreement["estimate"] <= agreement["upper"] <= 1.0
        assert cohort["candidate_p95_ms"]["upper"] <= 250 and sum(cohort["candidate_labels"].values()) == cohort["rows"]
        assert cohort["stopped"] == {} and cohort["error_rate"]["estimate"] == 0.0

        canary_id = report["canary_rollout_id"]
        assert canary_id is not None
        canary = cp.wait_state(canary_id, "succeeded", "aborted", "failed", timeout=60)
        assert canary["state"] == "succeeded" and canary["kind"] == "canary" and canary["wave_plan"] == [1, 2]
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values()),
                 timeout=30, interval=0.2)
        assert _shadow(cp, canary_id)["rollout_id"] == shadow["id"]  # the canary's view shows its shadow phase

        # A candidate no device can run within budget: stopped on the devices, reported, the gate fails.
        slow = cp.call("POST", "/fleet/deployments", json={
            "model": "digits", "version": 1, "selector": {"group": "sh"},
            "strategy": {"kind": "shadow", "shadow": {"sample_rate": 1.0, "max_latency_ms": 0.00001},
                         "gate": {"min_agreement": 0.5, "min_windows": 1}}})
        failed = cp.wait_state(slow["id"], "failed", "succeeded", "aborted", timeout=90)
        assert failed["state"] == "failed" and "shadow stopped" in failed["reason"], failed
        assert "shadow_too_slow" in failed["reason"]
        blocked = _shadow(cp, slow["id"])
        assert blocked["verdict"] == "fail" and blocked["canary_rollout_id"] is None
        assert sum(c["stopped"].get("shadow_too_slow", 0) for c in blocked["cohorts"]) >= 1
        assert all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values())
        assert all(agent.poll() is None for agent in agents)
    finally:
        stop.set()
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(10)

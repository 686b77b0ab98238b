"""End to end: uvicorn control plane + private mosquitto + real `python -m edge_agent` processes.

A waved int8 rollout reaches every device; a model whose self-test cannot pass is caught on the canary,
the device keeps serving the previous model and the health gate aborts the rollout; an approver's
rollback then returns the fleet to the older model with new, higher-sequence manifests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto, free_port
from control_plane.settings import Settings
from tests.control_plane.fleet import conftest as fleet_conftest
from tests.control_plane.fleet.conftest import FleetModels, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
DEVICES = ("edge-a", "edge-b")
# Reuse the fleet tests' fixtures (a conftest's fixtures are only visible below its directory).
fleet_models = fleet_conftest.fleet_models
private_broker = fleet_conftest.private_broker


@dataclass
class ControlPlane:
    """A served control plane and an HTTP client with tokens for each role."""

    url: str
    http: httpx.Client
    headers: dict[str, dict[str, str]]

    def call(self, method: str, path: str, role: str = "operator", **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.url}/api/v1{path}", headers=self.headers[role], **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/fleet/rollouts/{rollout_id}"))

    def wait_state(self, rollout_id: str, *states: str, timeout: float = 40.0) -> dict[str, Any]:
        return dict(wait_for(lambda: (r := self.rollout(rollout_id))["state"] in states and r, timeout=timeout,
                             interval=0.1))


@contextmanager
def serve_control_plane(tmp_path: Path, broker: PrivateMosquitto, database_url: str,
                        **overrides: Any) -> Iterator[ControlPlane]:
    """Serve the app with uvicorn on a free port, with the MQTT bridge on the private broker."""
    upgrade(database_url)
    port = free_port()
    # The broker requires passwords and enforces the ACL; the control plane keeps its password file current.
    settings = Settings(data_dir=tmp_path / "cp", database_url=database_url, port=port, fleet_step_seconds=0.2,
                        audit_checkpoint_seconds=3600, **{**broker.settings_overrides(), **overrides})
    database = Database(database_url)
    headers = {}
    with database.transaction() as session:
        for role in ("operator", "approver", "admin"):
            _, token = auth_service.create_token(session=session, actor="admin:e2e",
                                                 request=TokenCreate(name=f"e2e-{role}", role=Role(role)))
            headers[role] = {"Authorization": f"Bearer {token}"}
    database.dispose()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    try:
        with httpx.Client(timeout=30) as http:
            yield ControlPlane(f"http://127.0.0.1:{port}", http, headers)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def control_plane(tmp_path: Path, private_broker: PrivateMosquitto) -> Iterator[ControlPlane]:
    """The control plane on a SQLite file."""
    with serve_control_plane(tmp_path, private_broker, f"sqlite:///{tmp_path / 'cp.db'}") as served:
        yield served


def _start_agent(provisioned: dict[str, Any], state_dir: Path, predict_port: int) -> subprocess.Popen[bytes]:
    config = provisioned["edge_config"]
    env = {**os.environ, "EDGELOOP_EDGE_STATE_DIR": str(state_dir), "EDGELOOP_EDGE_PREDICT_PORT": str(predict_port),
           "EDGELOOP_EDGE_RECONNECT_MIN_S": "1", "EDGELOOP_EDGE_RECONNECT_MAX_S": "2",
           **{f"EDGELOOP_EDGE_{key.upper()}": str(value) for key, value in config.items()}}
    log = open(state_dir.parent / f"{provisioned['id']}.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "--log-level", "INFO"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _device_health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def _predict(port: int, rows: list[list[float]]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"inputs": rows}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.loads(response.read()))


def _upload(cp: ControlPlane, name: str, version: int, data: bytes, quantization: str) -> None:
    cp.http.post(f"{cp.url}/api/v1/models", json={"name": name}, headers=cp.headers["operator"])
    cp.call("POST", f"/models/{name}/versions", json={"version": version})
    blob = cp.http.post(f"{cp.url}/api/v1/artifacts", content=data, headers=cp.headers["operator"]).json()
    cp.call("POST", f"/models/{name}/versions/{version}/artifacts",
            json={"sha256": blob["sha256"], "quantization": quantization})


def test_waved_rollout_automatic_revert_and_rollback(
        control_plane: ControlPlane, fleet_models: FleetModels, tmp_path: Path) -> None:
    cp = control_plane
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    _upload(cp, "digits", 3, fleet_models.noisy, "fp32")
    agents: list[subprocess.Popen[bytes]] = []
    ports = {device: free_port() for device in DEVICES}
    try:
        for device in DEVICES:
            provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "e2e"})
            (tmp_path / "agents" / device).mkdir(parents=True)
            agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
        wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "e2e"})),
                 timeout=40, interval=0.2)

        # 1. First install, all at once.
        first = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                           "selector": {"group": "e2e"}})
        assert cp.wait_state(first["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"

        # 2. Waved int8 update: the canary (edge-a) activates before edge-b gets anything.
        second = cp.call("POST", "/fleet/deployments", json={
            "model": "digits", "version": 2, "selector": {"group": "e2e"},
            "strategy": {"kind": "waves", "waves": [50, 100], "failure_threshold": 0.0}})
        assert second["wave_plan"] == [1, 2] and second["progress"]["issued"] == 1
        done = cp.wait_state(second["id"], "succeeded", "aborted", "failed")
        assert done["state"] == "succeeded" and done["progress"]["succeeded"] == 2
        targets = {t["device_id"]: t for t in cp.call("GET", f"/fleet/rollouts/{second['id']}/devices")}
        assert targets["edge-a"]["wave"] == 0 and targets["edge-b"]["wave"] == 1
        assert targets["edge-a"]["finished_at"] <= targets["edge-b"]["issued_at"]
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values()))

        # 3. A model whose self-test cannot pass: the canary refuses it and keeps serving v2; the gate aborts.
        third = cp.call("POST", "/fleet/deployments", json={
            "model": "digits", "version": 3, "selector": {"group": "e2e"},
            "strategy": {"kind": "waves", "waves": [50, 100], "failure_threshold": 0.0}})
        aborted = cp.wait_state(third["id"], "aborted", "succeeded", "failed")
        assert aborted["state"] == "aborted" and "health gate" in aborted["reason"]
        targets = {t["device_id"]: t for t in cp.call("GET", f"/fleet/rollouts/{third['id']}/devices")}
        assert targets["edge-a"]["state"] == "failed" and targets["edge-a"]["reason"] == "self_test_failed"
        assert targets["edge-b"]["state"] == "cancelled" and targets["edge-b"]["sequence"] is None
        canary = cp.call("GET", "/fleet/devices/edge-a")
        assert canary["reported"]["state"] == "failed" and canary["reported"]["reason"] == "self_test_failed"
        health = _device_health(ports["edge-a"])
        assert health["ready"] and health["model"] == {"name": "digits", "version": 2}
        assert len(_predict(ports["edge-a"], [[0.0] * 64])["labels"]) == 1

        # 4. Roll the v2 rollout back (approver): new manifests with higher sequences take both devices to v1.
        before = {d["id"]: d["sequence"] for d in cp.call("GET", "/fleet/devices", params={"group": "e2e"})}
        back = cp.call("POST", f"/fleet/rollouts/{second['id']}/rollback", role="approver",
                       json={"reason": "e2e", "strategy": {"kind": "all_at_once"}})
        assert cp.wait_state(back["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        after = {d["id"]: d["sequence"] for d in cp.call("GET", "/fleet/devices", params={"group": "e2e"})}
        assert all(after[d] == before[d] + 1 for d in DEVICES)
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 1} for p in ports.values()))
        assert all(agent.poll() is None for agent in agents)
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(10)

"""End to end blue-green: control plane + authenticated mosquitto with its ACL + real `python -m edge_agent`.

Two online devices stage v2 while serving v1, a third (offline) never stages; one signed cut-over switches the
staged ones and not the third, the report counts staged/switched, and switching back is one more command.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from control_plane.mqtt.broker import free_port
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e.test_ota_rollout import (  # noqa: F401 - fixtures are found by name
    ControlPlane,
    _device_health,
    _start_agent,
    _upload,
    control_plane,
    fleet_models,
    private_broker,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
ONLINE = ("bg-a", "bg-b")


def test_blue_green_stage_cut_over_and_switch_back(
        control_plane: ControlPlane, fleet_models: FleetModels, tmp_path: Path) -> None:  # noqa: F811
    cp = control_plane
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    agents: list[subprocess.Popen[bytes]] = []
    ports = {device: free_port() for device in ONLINE}
    try:
        for device in (*ONLINE, "bg-offline"):
            provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "bg"})
            if device in ONLINE:
                (tmp_path / "agents" / device).mkdir(parents=True)
                agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
        wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "bg"})
                             if d["id"] in ONLINE), timeout=40, interval=0.2)
        first = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                           "selector": {"device_ids": list(ONLINE)}})
        assert cp.wait_state(first["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        # Not blue-green yet: no cut-over for a waved rollout.
        response = cp.http.post(f"{cp.url}/api/v1/fleet/rollouts/{first['id']}/cutover", json={},
                                headers=cp.headers["operator"])
        assert response.status_code == 422 and "not a blue_green rollout" in response.text

        staged = cp.call("POST", "/fleet/deployments", json={
            "model": "digits", "version": 2, "selector": {"group": "bg"},
            "strategy": {"kind": "blue_green", "wave_timeout_s": 8, "failure_threshold": 0.5}})
        done = cp.wait_state(staged["id"], "succeeded", "aborted", "failed", timeout=60)
        assert done["state"] == "succeeded" and done["progress"]["by_state"]["staged"] == 2
        # Staged, not switched: both still serve v1.
        assert all(_device_health(p)["model"] == {"name": "digits", "version": 1} for p in ports.values())
        report = cp.call("GET", f"/fleet/rollouts/{staged['id']}/bluegreen")
        assert (report["targets"], report["staged"], report["not_staged"], report["last_cutover"]) == (3, 2, 1, None)

        for path, body, code in ((f"/fleet/rollouts/{staged['id']}/cutover", {"to": "sideways"}, 422),
                                 (f"/fleet/rollouts/{staged['id']}/cutover", {"at": "2030-01-01T00:00:00"}, 422),
                                 (f"/fleet/rollouts/{staged['id']}/cutover", {"at": "2999-01-01T00:00:00Z"}, 422),
                                 (f"/fleet/rollouts/{staged['id']}/cutover", {"reason": "a\u0000b"}, 422),
                                 ("/fleet/rollouts/ro_missing/cutover", {}, 404)):
            response = cp.http.post(f"{cp.url}/api/v1{path}", json=body, headers=cp.headers["operator"])
            assert response.status_code == code, (body, response.text)
        assert cp.call("GET", f"/fleet/rollouts/{staged['id']}/bluegreen")["last_cutover"] is None  # nothing sent
        cut = cp.call("POST", f"/fleet/rollouts/{staged['id']}/cutover", json={"to": "new", "reason": "e2e"})
        assert cut["last_cutover"]["sequence"] == 1 and cut["last_cutover"]["to"] == "new"
        report = wait_for(lambda: (r := cp.call("GET", f"/fleet/rollouts/{staged['id']}/bluegreen"))["switched"] == 2
                          and r, timeout=30, interval=0.2)
        assert report["not_switched"] == 0 and report["pending"] == 0 and report["last_cutover"]["published_at"]
        assert all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values())
        offline = cp.call("GET", "/fleet/devices/bg-offline")
        assert offline["reported"]["state"] is None  # Never staged, never switched.

        cp.call("POST", f"/fleet/rollouts/{staged['id']}/cutover", json={"to": "old"})
        wait_for(lambda: cp.call("GET", f"/fleet/rollouts/{staged['id']}/bluegreen")["switched"] == 2
                 and all(_device_health(p)["model"] == {"name": "digits", "version": 1} for p in ports.values()),
                 timeout=30, interval=0.2)
        assert all(agent.poll() is None for agent in agents)
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(10)

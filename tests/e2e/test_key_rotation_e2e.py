"""End to end: `edgeloop keys rotate` on a served control plane; a real agent follows through its manifests."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from fastapi import FastAPI
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from typer.testing import CliRunner

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.cli.main import app as cli
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto, free_port
from control_plane.settings import Settings
from tests.control_plane.fleet import conftest as fleet_conftest
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e.test_ota_rollout import ControlPlane, _device_health, _start_agent, _upload

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
fleet_models = fleet_conftest.fleet_models
private_broker = fleet_conftest.private_broker
KEK = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def served(tmp_path: Path, private_broker: PrivateMosquitto,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ControlPlane, FastAPI]]:
    """Serve the app (database key store on) with the MQTT bridge; point the CLI at the same database."""
    database_url = f"sqlite:///{tmp_path / 'cp.db'}"
    upgrade(database_url)
    port = free_port()
    settings = Settings(data_dir=tmp_path / "cp", database_url=database_url, port=port,
                        **private_broker.settings_overrides(),
                        fleet_step_seconds=0.2, audit_checkpoint_seconds=3600, key_encryption_key=SecretStr(KEK))
    for key, value in {"EDGELOOP_DATA_DIR": str(tmp_path / "cli"), "EDGELOOP_DATABASE_URL": database_url,
                       "EDGELOOP_KEY_ENCRYPTION_KEY": KEK}.items():
        monkeypatch.setenv(key, value)
    database = Database(database_url)
    with database.transaction() as session:
        _, token = auth_service.create_token(session=session, actor="admin:e2e",
                                             request=TokenCreate(name="e2e-operator", role=Role.OPERATOR))
    database.dispose()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    with httpx.Client(timeout=30) as http:
        yield ControlPlane(f"http://127.0.0.1:{port}", http, {"operator": {"Authorization": f"Bearer {token}"}}), app
    server.should_exit = True
    thread.join(15)


def _deploy(cp: ControlPlane, version: int) -> None:
    rollout = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": version,
                                                         "selector": {"group": "rot"}})
    assert cp.wait_state(rollout["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"


def _refusals(cp: ControlPlane) -> int:
    """Count the rejections the control plane has stored for the device (so no rollout overlaps them)."""
    events = cp.call("GET", "/fleet/events", params={"limit": 1000})
    return sum(1 for e in events if e["device_id"] == "edge-rot" and e["state"] == "rejected")


def test_rotation_reaches_a_real_agent_and_the_old_key_is_retired(
        served: tuple[ControlPlane, FastAPI], fleet_models: FleetModels, private_broker: PrivateMosquitto,
        tmp_path: Path) -> None:
    cp, app = served
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    provisioned = cp.call("POST", "/fleet/devices", json={"id": "edge-rot", "group": "rot"})
    state_dir = tmp_path / "agents" / "edge-rot"
    state_dir.mkdir(parents=True)
    port = free_port()
    agent = _start_agent(provisioned, state_dir, port)
    try:
        wait_for(lambda: cp.call("GET", "/fleet/devices/edge-rot")["online"], timeout=40, interval=0.2)
        _deploy(cp, 1)
        old = app.state.fleet_factory.signer

        result = CliRunner().invoke(cli, ["keys", "rotate", "--grace-seconds", "2"])
        assert result.exit_code == 0, result.output
        _deploy(cp, 2)  # signed by the new key; the envelope carries the rotation signed by the old one
        new_key = cp.call("GET", "/fleet/signing-key")["key_id"]
        assert new_key != old.key_id
        trusted = json.loads((state_dir / "trusted_keys.json").read_text())
        assert trusted["version"] == 2 and len(trusted["keys"]) == 2
        wait_for(lambda: _device_health(port)["model"] == {"name": "digits", "version": 2})

        # After the grace, someone holding the old key publishes a manifest: the device refuses it.
        time.sleep(2.5)
        ota_before = json.loads((state_dir / "ota.json").read_text())
        payload = json.dumps({"schema": "edgeloop.manifest/v1", "device_id": "edge-rot",
                              "sequence": ota_before["last_accepted"] + 100}).encode()
        forged = json.dumps({"payload": base64.b64encode(payload).decode(),
                             "signature": base64.b64encode(old.sign(payload)).decode(), "key_id": old.key_id})
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"old-key-{uuid.uuid4().hex[:6]}")
        # The broker only lets the control plane's own login write manifests: the old key's holder needs it too.
        private_broker.authorise(client, private_broker.control_plane_user)
        client.connect("127.0.0.1", private_broker.port)
        client.loop_start()
        client.publish("edgeloop/devices/edge-rot/manifest", forged.encode(), qos=1,
                       retain=True).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        log = tmp_path / "agents" / "edge-rot.log"
        wait_for(lambda: "retired_key" in log.read_text(), timeout=20)
        wait_for(lambda: _refusals(cp) == 1, timeout=20, interval=0.2)
        assert json.loads((state_dir / "ota.json").read_text())["last_accepted"] == ota_before["last_accepted"]

        # The trusted set survives a restart: the retained forgery is refused again, the next rollout applied.
        agent.terminate()
        agent.wait(10)
        agent = _start_agent(provisioned, state_dir, port)  # a fresh log file
        wait_for(lambda: "retired_key" in log.read_text(), timeout=20)
        wait_for(lambda: _refusals(cp) == 2, timeout=20, interval=0.2)
        _deploy(cp, 1)
        wait_for(lambda: _device_health(port)["model"] == {"name": "digits", "version": 1})
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(10)

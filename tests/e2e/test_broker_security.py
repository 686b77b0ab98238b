"""Against real processes (uvicorn control plane, mosquitto with password file + ACL, `python -m edge_agent`):
strangers and other devices cannot read, forge or inject; an aborted rollout does not reach a device offline
during the abort."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.mqtt.broker import PrivateMosquitto, free_port
from tests.control_plane.fleet import conftest as fleet_conftest
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e import test_ota_rollout as e2e
from tests.e2e.test_ota_rollout import ControlPlane, _device_health, _start_agent, _upload

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
fleet_models = fleet_conftest.fleet_models
private_broker = fleet_conftest.private_broker
control_plane = e2e.control_plane


class Probe:
    """A paho client that records its CONNACK and what it receives."""

    def __init__(self, broker: PrivateMosquitto, username: str | None = None, password: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.refused: str | None = None
        self.answered = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", broker.port, 30)
        self.client.loop_start()
        assert self.answered.wait(10)

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        self.refused = str(reason_code) if reason_code.is_failure else None
        self.answered.set()

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stop(agent: subprocess.Popen[bytes]) -> None:
    agent.terminate()
    agent.wait(10)


def _provision(cp: ControlPlane, tmp_path: Path, device: str) -> tuple[dict[str, Any], Path]:
    provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "sec"})
    assert provisioned["edge_config"]["broker_username"] == device and provisioned["edge_config"]["broker_password"]
    state = tmp_path / "agents" / device
    state.mkdir(parents=True)
    return provisioned, state


def _status_body(device: str, rollout_id: str, sequence: int) -> bytes:
    return json.dumps({"schema": "edgeloop.status/v1", "event_id": str(uuid.uuid4()), "device_id": device,
                       "rollout_id": rollout_id, "sequence": sequence, "state": "activated", "reason": None,
                       "model": None, "slot": "a", "ts": time.time()}).encode()


def test_strangers_and_other_devices_cannot_read_forge_or_inject(
        control_plane: ControlPlane, private_broker: PrivateMosquitto, fleet_models: FleetModels,
        tmp_path: Path) -> None:
    cp = control_plane
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    a, a_state = _provision(cp, tmp_path, "sec-a")
    _provision(cp, tmp_path, "sec-b")  # stays offline: its manifest waits, retained, on the broker
    port = free_port()
    agent = _start_agent(a, a_state, port)
    probes: list[Probe] = []
    try:
        rollout = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                             "selector": {"group": "sec"}})
        # The real agent logged in with its own credentials and completed the OTA.
        wait_for(lambda: {t["device_id"]: t["state"] for t in cp.call(
            "GET", f"/fleet/rollouts/{rollout['id']}/devices")}["sec-a"] == "activated", timeout=40, interval=0.2)
        assert _device_health(port)["model"] == {"name": "digits", "version": 1}
        b_sequence = cp.call("GET", "/fleet/devices/sec-b")["desired"]["sequence"]

        # No anonymous session at all: it cannot read retained manifests, forge status or publish manifests.
        anonymous = Probe(private_broker)
        probes.append(anonymous)
        assert anonymous.refused is not None and "authori" in anonymous.refused.lower()
        assert Probe(private_broker, "sec-a", "not-the-password").refused is not None

        # A genuine device is confined to its own subtree.
        insider = Probe(private_broker, "sec-a", a["edge_config"]["broker_password"])
        probes.append(insider)
        assert insider.refused is None
        insider.subscribe("edgeloop/devices/sec-b/manifest")
        insider.subscribe("edgeloop/devices/+/status")
        insider.publish("edgeloop/devices/sec-b/status", _status_body("sec-b", rollout["id"], b_sequence))
        insider.publish("edgeloop/devices/sec-b/manifest", b"{}", retain=True)
        insider.publish("edgeloop/devices/sec-a/manifest", b"junk", retain=True)  # its own: read-only
        observer = Probe(private_broker, private_broker.control_plane_user, private_broker.control_plane_password)
        probes.append(observer)
        observer.subscribe("edgeloop/devices/+/manifest")
        wait_for(lambda: {t for t, _ in observer.got} >= {"edgeloop/devices/sec-a/manifest",
                                                          "edgeloop/devices/sec-b/manifest"})
        time.sleep(1.0)  # give anything that should not happen the time to happen
        assert insider.got == []
        assert all(payload.startswith(b'{"payload"') or b'"signature"' in payload for _, payload in observer.got)
        targets = {t["device_id"]: t["state"] for t in cp.call("GET", f"/fleet/rollouts/{rollout['id']}/devices")}
        assert targets == {"sec-a": "activated", "sec-b": "issued"}
        assert cp.rollout(rollout["id"])["state"] == "in_progress"
        events = cp.call("GET", "/fleet/devices/sec-a/events")
        assert not any(e["state"] == "rejected" for e in events)  # the agent never saw junk to reject

        # Junk that does reach the agent (here: sent with the control plane's own login) is answered with
        # rejected/malformed, which names no manifest: recorded, but it neither fails sec-a nor aborts the rollout.
        observer.publish("edgeloop/devices/sec-a/manifest", b"{not a manifest")
        rejected = wait_for(lambda: [e for e in cp.call("GET", "/fleet/devices/sec-a/events")
                                     if e["state"] == "rejected"], timeout=20, interval=0.2)
        assert rejected[0]["accepted"] and rejected[0]["rollout_id"] is None and rejected[0]["sequence"] is None
        assert cp.call("GET", "/fleet/devices/sec-a")["reported"]["reason"] == "malformed"
        targets = {t["device_id"]: t["state"] for t in cp.call("GET", f"/fleet/rollouts/{rollout['id']}/devices")}
        assert targets == {"sec-a": "activated", "sec-b": "issued"}
        assert cp.rollout(rollout["id"])["state"] == "in_progress"
        assert _device_health(port)["model"] == {"name": "digits", "version": 1}
        assert agent.poll() is None
    finally:
        for probe in probes:
            probe.close()
        _stop(agent)


def test_a_device_offline_during_an_abort_ends_on_the_version_the_control_plane_intends(
        control_plane: ControlPlane, private_broker: PrivateMosquitto, fleet_models: FleetModels,
        tmp_path: Path) -> None:
    cp = control_plane
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    a, a_state = _provision(cp, tmp_path, "off-a")  # had v1 before the aborted rollout
    b, b_state = _provision(cp, tmp_path, "off-b")  # had nothing
    ports = {"off-a": free_port(), "off-b": free_port()}
    agent = _start_agent(a, a_state, ports["off-a"])
    agents = [agent]
    try:
        first = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                           "selector": {"device_ids": ["off-a"]}})
        assert cp.wait_state(first["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        _stop(agent)
        wait_for(lambda: not cp.call("GET", "/fleet/devices/off-a")["online"], timeout=20, interval=0.2)

        second = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 2,
                                                            "selector": {"group": "sec"}})
        aborted_sequences = {t["device_id"]: t["sequence"]
                             for t in cp.call("GET", f"/fleet/rollouts/{second['id']}/devices")}
        assert cp.call("POST", f"/fleet/rollouts/{second['id']}/abort", json={"reason": "bad"})["state"] == "aborted"
        # The broker now offers off-a a newer manifest for v1 and off-b nothing (its retained manifest is cleared).
        retained = wait_for(lambda: (r := _retained_manifests(private_broker)).get("off-a", {}).get("sequence")
                            == aborted_sequences["off-a"] + 1 and "off-b" not in r and r, timeout=20)
        assert retained["off-a"]["model"] == {"name": "digits", "version": 1}

        agents = [_start_agent(a, a_state, ports["off-a"]), _start_agent(b, b_state, ports["off-b"])]
        wait_for(lambda: all(cp.call("GET", f"/fleet/devices/{d}")["online"] for d in ports), timeout=40,
                 interval=0.2)
        # off-a acts on the restore manifest (the newest it is offered), not on the aborted one.
        wait_for(lambda: (r := cp.call("GET", "/fleet/devices/off-a")["reported"])["sequence"]
                 == aborted_sequences["off-a"] + 1 and r["state"] == "activated", timeout=40, interval=0.2)
        time.sleep(1.0)  # off-b has nothing to act on; give a stray retained manifest the time to arrive
        assert _device_health(ports["off-a"])["model"] == {"name": "digits", "version": 1}
        assert _device_health(ports["off-b"])["model"] is None
        for device, sequence in aborted_sequences.items():
            named = [e for e in cp.call("GET", f"/fleet/devices/{device}/events") if e["sequence"] == sequence]
            assert named == [], f"{device} acted on the aborted manifest: {named}"
        assert all(agent.poll() is None for agent in agents)
    finally:
        for running in agents:
            _stop(running)



def _retained_manifests(broker: PrivateMosquitto) -> dict[str, dict[str, Any] | None]:
    """Return what a newly subscribing device would be offered now: {device: decoded payload}."""
    import base64

    probe = Probe(broker, broker.control_plane_user, broker.control_plane_password)
    try:
        probe.subscribe("edgeloop/devices/+/manifest")
        time.sleep(0.3)
        return {topic.split("/")[2]: json.loads(base64.b64decode(json.loads(payload)["payload"])) if payload else None
                for topic, payload in probe.got}
    finally:
        probe.close()

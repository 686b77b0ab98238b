"""The MQTT bridge against a real private mosquitto: manifests out, status in, malformed input, broker restart."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.db.session import Database
from control_plane.fleet import service
from control_plane.fleet.bridge import FleetBridge
from control_plane.fleet.manifests import factory_for
from control_plane.fleet.schemas import DeviceCreate
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.signing import verify_signature
from tests.control_plane.fleet.conftest import FleetModels, register, wait_for

pytestmark = [pytest.mark.mqtt, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


class FakeDevices:
    """A plain paho client speaking for several devices: collects manifests, publishes status/presence."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.manifests: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        broker.authorise(self.client, broker.control_plane_user)  # one client speaking for many devices
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe("edgeloop/devices/+/manifest", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, 30)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.manifests.append((message.topic.split("/")[2], bytes(message.payload)))

    def received(self, device_id: str) -> list[dict[str, Any]]:
        with self.lock:
            envelopes = [json.loads(p) for d, p in self.manifests if d == device_id]
        return [json.loads(base64.b64decode(e["payload"])) for e in envelopes]

    def status(self, device_id: str, manifest: dict[str, Any], state: str, event_id: str | None = None) -> None:
        body = {"schema": "edgeloop.status/v1", "event_id": event_id or str(uuid.uuid4()), "device_id": device_id,
                "rollout_id": manifest["rollout_id"], "sequence": manifest["sequence"], "state": state,
                "reason": None, "model": manifest["model"], "slot": "a", "ts": 1.0}
        self.raw(f"edgeloop/devices/{device_id}/status", json.dumps(body).encode())

    def raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def bridge(client: TestClient, database: Database, private_broker: PrivateMosquitto) -> Iterator[FleetBridge]:
    """A bridge on the test database and the private broker."""
    instance = FleetBridge(database, factory_for(client.app.state), step_seconds=0.2,  # type: ignore[attr-defined]
                           **private_broker.client_options())
    instance.start_sync()
    assert instance.connection.connected.wait(10)
    yield instance
    instance.stop_sync()


def test_bridge_round_trip_malformed_input_and_broker_restart(
        client: TestClient, database: Database, operator_headers: dict[str, str], fleet_models: FleetModels,
        private_broker: PrivateMosquitto, bridge: FleetBridge) -> None:
    assert bridge.connection.shared_available  # mosquitto offers $share, so replicas split the load
    register(client, operator_headers, "digits", 1, [(fleet_models.v1_int8, "int8")])
    with database.transaction() as session:
        for device_id in ("b0", "b1"):
            service.provision_device(session=session, request=DeviceCreate(id=device_id), actor="operator:test")
    devices = FakeDevices(private_broker)
    try:
        rollout = client.post("/api/v1/fleet/deployments", headers=operator_headers, json={
            "model": "digits", "version": 1, "selector": {"device_ids": ["b0", "b1"]}}).json()
        b0 = wait_for(lambda: devices.received("b0"))[-1]
        b1 = wait_for(lambda: devices.received("b1"))[-1]
        assert b0["rollout_id"] == rollout["id"] and b0["sequence"] == 1 and b1["device_id"] == "b1"
        envelope = json.loads(devices.manifests[0][1])
        assert verify_signature(bridge.factory.signer.public_raw, base64.b64decode(envelope["signature"]),
                                base64.b64decode(envelope["payload"]))

        # Garbage on the status topics is counted and stored; it never stops the bridge.
        devices.raw("edgeloop/devices/b0/status", b"\xff{not json")
        devices.raw("edgeloop/devices/b0/status", b'{"schema": "edgeloop.status/v1", "device_id": "b0"}')
        devices.status("b0", b0, "received", event_id="same-event")
        devices.status("b0", b0, "received", event_id="same-event")
        devices.status("b0", b0, "activated")
        wait_for(lambda: bridge.stats.malformed >= 2 and bridge.stats.duplicates >= 1)
        targets = lambda: {t["device_id"]: t["state"] for t in client.get(  # noqa: E731
            f"/api/v1/fleet/rollouts/{rollout['id']}/devices", headers=operator_headers).json()}
        wait_for(lambda: targets()["b0"] == "activated")
        bad = client.get("/api/v1/fleet/events", params={"accepted": False}, headers=operator_headers).json()
        assert {e["reason"] for e in bad} >= {"payload is not JSON", "event_id must be a string of 1..64 characters"}

        # Restart the broker mid-rollout: the bridge reconnects and re-sends b1's manifest (b1 is still updating).
        private_broker.stop()
        wait_for(lambda: not bridge.connection.connected.is_set())
        before = len(devices.received("b1"))
        private_broker.start()
        wait_for(lambda: bridge.connection.connect_count >= 2 and bridge.stats.republish_rounds >= 1, timeout=30)
        wait_for(lambda: len(devices.received("b1")) > before, timeout=30)
        assert devices.received("b1")[-1]["sequence"] == b1["sequence"]
        devices.status("b1", b1, "activated")
        devices.raw("edgeloop/devices/b1/presence", json.dumps({
            "schema": "edgeloop.presence/v1", "device_id": "b1", "online": True, "model": b1["model"], "slot": "a",
            "ts": 2.0}).encode(), retain=True)
        wait_for(lambda: client.get(f"/api/v1/fleet/rollouts/{rollout['id']}",
                                    headers=operator_headers).json()["state"] == "succeeded", timeout=30)
        device = client.get("/api/v1/fleet/devices/b1", headers=operator_headers).json()
        assert device["online"] is True and device["reported"]["model"] == {"name": "digits", "version": 1}
    finally:
        devices.close()


def test_two_replicas_split_the_events_and_apply_each_once(
        client: TestClient, database: Database, operator_headers: dict[str, str], fleet_models: FleetModels,
        private_broker: PrivateMosquitto, bridge: FleetBridge) -> None:
    replica = FleetBridge(database, bridge.factory, step_seconds=0.2, **private_broker.client_options())
    replica.start_sync()
    devices = FakeDevices(private_broker)
    try:
        assert replica.connection.connected.wait(10)
        register(client, operator_headers, "digits", 1, [(fleet_models.v1_int8, "int8")])
        ids = [f"r{index:02d}" for index in range(20)]
        with database.transaction() as session:
            for device_id in ids:
                service.provision_device(session=session, request=DeviceCreate(id=device_id), actor="operator:test")
        rollout = client.post("/api/v1/fleet/deployments", headers=operator_headers, json={
            "model": "digits", "version": 1, "selector": {"device_ids": ids}}).json()
        manifests = {d: wait_for(lambda d=d: devices.received(d))[-1] for d in ids}
        for device_id, manifest in manifests.items():
            event_id = str(uuid.uuid4())
            devices.status(device_id, manifest, "activated", event_id=event_id)
            devices.status(device_id, manifest, "activated", event_id=event_id)  # a QoS 1 redelivery
        wait_for(lambda: client.get(f"/api/v1/fleet/rollouts/{rollout['id']}",
                                    headers=operator_headers).json()["state"] == "succeeded", timeout=30)
        handled = lambda b: b.stats.applied + b.stats.duplicates + b.stats.malformed  # noqa: E731
        wait_for(lambda: handled(bridge) + handled(replica) == 40)
        assert bridge.stats.applied + replica.stats.applied == 20
        assert bridge.stats.duplicates + replica.stats.duplicates == 20
        assert bridge.stats.received > 0 and replica.stats.received > 0  # the broker split the shared subscription
        assert sum(len(devices.received(d)) for d in ids) == 20  # each manifest published once, not once per replica
    finally:
        devices.close()
        replica.stop_sync()

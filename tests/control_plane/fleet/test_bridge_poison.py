"""Poison isolation on the bridge: one bad status in a burst from many devices costs no other message."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from control_plane.db.session import Database
from control_plane.fleet import events
from control_plane.fleet.bridge import FleetBridge
from control_plane.fleet.manifests import factory_for
from control_plane.fleet.models import Device, DeviceEvent
from control_plane.mqtt.broker import PrivateMosquitto
from tests.control_plane.fleet.conftest import wait_for

pytestmark = pytest.mark.mqtt
DEVICES = [f"p{index:02d}" for index in range(50)]


def _status(device_id: str, index: int, sequence: int | None = None) -> bytes:
    return json.dumps({"schema": "edgeloop.status/v1", "event_id": f"{device_id}-{index}-{uuid.uuid4().hex[:8]}",
                       "device_id": device_id, "rollout_id": None, "sequence": sequence, "state": "received",
                       "reason": None, "model": None, "slot": "a", "ts": 1.0}).encode()


@pytest.fixture
def bridge(client: TestClient, database: Database, private_broker: PrivateMosquitto) -> Iterator[FleetBridge]:
    with database.transaction() as session:
        session.add_all([Device(id=d, sequence=0, online=False, created_by="test", labels={}) for d in DEVICES])
    instance = FleetBridge(database, factory_for(client.app.state), step_seconds=0.2,  # type: ignore[attr-defined]
                           **private_broker.client_options())
    instance.start_sync()
    assert instance.connection.ready.wait(10)
    yield instance
    instance.stop_sync()


def _counts(database: Database) -> tuple[int, int]:
    with database.transaction(write=False) as session:
        accepted = session.scalar(select(func.count()).select_from(DeviceEvent).where(DeviceEvent.accepted.is_(True)))
        refused = session.scalar(select(func.count()).select_from(DeviceEvent).where(DeviceEvent.accepted.is_(False)))
    return int(accepted or 0), int(refused or 0)


def test_one_poison_message_in_a_burst_of_1000_from_50_devices(
        database: Database, private_broker: PrivateMosquitto, bridge: FleetBridge) -> None:
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{uuid.uuid4().hex[:6]}",
                            protocol=mqtt.MQTTv311)
    private_broker.authorise(publisher, "edgeloop-cp")  # one client speaks for 50 devices: the operator's user
    publisher.connect("127.0.0.1", private_broker.port, 30)
    publisher.loop_start()
    try:
        infos = []
        for index in range(1000):
            device_id = DEVICES[index % len(DEVICES)]
            payload = _status(device_id, index, sequence=2**64 if index == 500 else index)
            infos.append(publisher.publish(f"edgeloop/devices/{device_id}/status", payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: sum(_counts(database)) == 1000, timeout=60)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    assert _counts(database) == (999, 1)
    assert bridge.stats.applied == 999 and bridge.stats.malformed == 1


def test_a_batch_the_database_refuses_is_retried_message_by_message(
        database: Database, bridge: FleetBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection for whatever validation cannot foresee: the database refuses one message of the batch.
    real_event_row = events._event_row

    def refusing(**row: object) -> dict[str, object]:
        built = real_event_row(**row)  # type: ignore[arg-type]
        if row["accepted"] and b'"p07-' in row["payload"]:  # type: ignore[operator]
            built["sequence"] = 2**64  # the driver raises OverflowError / DataError at insert
        return built

    monkeypatch.setattr(events, "_event_row", refusing)
    batch = [(f"edgeloop/devices/{d}/status", _status(d, 0, sequence=1)) for d in DEVICES[:20]]
    for message in batch:
        bridge._inbox.put(message)
    bridge.wake()
    wait_for(lambda: bridge.stats.applied + bridge.stats.quarantined == 20)
    assert (bridge.stats.applied, bridge.stats.quarantined) == (19, 1)
    assert _counts(database) == (19, 1)
    with database.transaction(write=False) as session:
        quarantined = session.scalar(select(DeviceEvent).where(DeviceEvent.accepted.is_(False)))
        assert quarantined is not None and quarantined.device_id == "p07"
        assert quarantined.reason is not None and quarantined.reason.startswith("quarantined: ")


def test_a_database_outage_loses_nothing_and_quarantines_nothing(
        database: Database, bridge: FleetBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    real_transaction = database.transaction
    outage = threading.Event()
    outage.set()

    def failing_transaction(**kwargs: object) -> Any:
        if outage.is_set():
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return real_transaction(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(database, "transaction", failing_transaction)
    for index, device_id in enumerate(DEVICES[:20]):
        bridge._inbox.put((f"edgeloop/devices/{device_id}/status", _status(device_id, index, sequence=1)))
    bridge.wake()
    wait_for(lambda: len(bridge._retry) == 20)  # held back, in order, while the database is away
    outage.clear()
    bridge.wake()
    wait_for(lambda: bridge.stats.applied == 20)
    assert bridge.stats.quarantined == 0 and _counts(database) == (20, 0)


def test_an_operational_error_only_one_message_causes_is_quarantined(
        database: Database, bridge: FleetBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    real_event_row = events._event_row

    def locked_for_one(**row: object) -> dict[str, object]:
        if row["accepted"] and b'"p03-' in row["payload"]:  # type: ignore[operator]
            raise OperationalError("INSERT", {}, Exception("canceling statement due to statement timeout"))
        return real_event_row(**row)  # type: ignore[arg-type]

    monkeypatch.setattr(events, "_event_row", locked_for_one)
    for index, device_id in enumerate(DEVICES[:10]):
        bridge._inbox.put((f"edgeloop/devices/{device_id}/status", _status(device_id, index, sequence=1)))
    bridge.wake()
    wait_for(lambda: bridge.stats.applied + bridge.stats.quarantined == 10)
    assert (bridge.stats.applied, bridge.stats.quarantined) == (9, 1) and _counts(database) == (9, 1)

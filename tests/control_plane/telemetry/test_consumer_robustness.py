"""The MQTT ingest under attack and failure, against a real mosquitto on both engines: hostile windows inside
bursts, a poison message ahead of 1,000 good ones, and kill -9 of the consumer process mid-burst."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select, text

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.mqtt.topics import device_topic
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.consumer import TelemetryConsumer
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from tests.control_plane.telemetry.devices import OutboxDevice, Pumper
from tests.control_plane.telemetry.hostile import RAW, SPOILERS
from tests.control_plane.telemetry.simulate import encode
from tests.control_plane.telemetry.test_consumer import count, publisher, wait_for
from tests.control_plane.telemetry.test_ingest import windows

ROOT = Path(__file__).resolve().parents[3]


def stored_keys(database: Database) -> list[tuple[str, int]]:
    with database.transaction(write=False) as session:
        return [(r[0], int(r[1])) for r in session.execute(select(TelemetryWindowRow.device_id,
                                                                  TelemetryWindowRow.window_seq))]


def reasons(database: Database) -> Counter[str]:
    with database.transaction(write=False) as session:
        return Counter(session.scalars(select(QuarantinedMessage.reason)))


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(device_topic(device, "telemetry"), payload, qos=1) for device, payload in messages]
    for info in infos:
        info.wait_for_publish(30)


@pytest.mark.mqtt
def test_every_hostile_window_in_a_burst_is_quarantined_alone_and_every_good_one_stored_once(
        database: Database, dataset_id: str, sensor_model: None, baseline: Baseline,
        mqtt_broker: PrivateMosquitto) -> None:
    good = [w for d in range(8) for w in windows(baseline, device_id=f"good-{d}", count=8, rows=20)]
    template = windows(baseline, device_id="dev-bad", count=1, rows=20)[0]
    bad: list[bytes] = []
    for spoil, _ in SPOILERS.values():
        spoiled = spoil(template)
        bad.append(spoiled if isinstance(spoiled, bytes) else encode(spoiled))
    bad += [raw for raw, _ in RAW.values()]
    expected = Counter(reason for _, reason in [*SPOILERS.values(), *RAW.values()])
    burst: list[tuple[str, bytes]] = [(w["device_id"], encode(w)) for w in good]
    for index, payload in enumerate(bad):  # spread the bad ones through the good ones
        burst.insert(index * 3, ("dev-bad", payload))
    acks: dict[str, set[int]] = {}
    listener = publisher(mqtt_broker)
    listener.on_message = lambda _c, _u, m: acks.setdefault(m.topic.split("/")[2], set()).update(
        json.loads(m.payload)["seqs"])
    listener.subscribe("edgeloop/devices/+/telemetry/ack", qos=1)
    consumer = TelemetryConsumer(database, mqtt_broker.url, TelemetrySettings(batch_wait_ms=20), name="hostile")
    consumer.start_sync()
    client = publisher(mqtt_broker)
    try:
        publish_all(client, burst)
        wait_for(lambda: count(database, TelemetryWindowRow) == 64 and count(database, QuarantinedMessage) == len(bad))
        wait_for(lambda: all(acks.get(f"good-{d}") == set(range(1, 9)) for d in range(8)))
    finally:
        for c in (client, listener):
            c.loop_stop()
            c.disconnect()
        consumer.stop_sync()
    keys = stored_keys(database)
    assert sorted(keys) == sorted((w["device_id"], w["window_seq"]) for w in good), "every good window, once"
    assert reasons(database) == expected
    assert consumer.failed_batches == 0


POISON_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER poison_window BEFORE INSERT ON telemetry_windows WHEN NEW.device_id = 'dev-poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned window'); END",
        "CREATE TRIGGER poison_quarantine BEFORE INSERT ON telemetry_quarantine WHEN NEW.reason = 'storage_error' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned quarantine'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'poisoned'; END $$",
        "CREATE TRIGGER poison_window BEFORE INSERT ON telemetry_windows FOR EACH ROW "
        "WHEN (NEW.device_id = 'dev-poison') EXECUTE FUNCTION poison()",
        "CREATE TRIGGER poison_quarantine BEFORE INSERT ON telemetry_quarantine FOR EACH ROW "
        "WHEN (NEW.reason = 'storage_error') EXECUTE FUNCTION poison()",
    ],
}


@pytest.fixture
def durable_broker() -> Iterator[PrivateMosquitto]:
    """A private broker: durable sessions must not leak into other tests."""
    broker = PrivateMosquitto(persistence=False, anonymous=True)
    broker.start()
    yield broker
    broker.close()


@pytest.mark.mqtt
@pytest.mark.slow
def test_a_poison_message_is_quarantined_and_the_1000_good_ones_behind_it_stored(
        database: Database, dataset_id: str, sensor_model: None, baseline: Baseline,
        durable_broker: PrivateMosquitto) -> None:
    # A window the database refuses every time, whose quarantine row it refuses too: the whole ingest fails on
    # it, again after every redelivery. That is the poison pill: it must cost neither the queue nor a window.
    with database.engine.begin() as connection:
        for statement in POISON_TRIGGERS[database.engine.dialect.name]:
            connection.execute(text(statement))
    poison = windows(baseline, device_id="dev-poison", count=1, rows=20)[0]
    good = [w for d in range(10) for w in windows(baseline, device_id=f"good-{d}", count=100, rows=20,
                                                    start=time.time() - 7200)]
    config = TelemetrySettings(batch_wait_ms=20, shared_subscription=False)
    consumer = TelemetryConsumer(database, durable_broker.url, config, name="poison", client_id="poison-durable")
    consumer.start_sync()
    client = publisher(durable_broker)
    try:
        publish_all(client, [("dev-poison", encode(poison))] + [(w["device_id"], encode(w)) for w in good])
        wait_for(lambda: count(database, TelemetryWindowRow) == 1000 and count(database, QuarantinedMessage) == 1,
                 timeout=60)
        consumer.stop_sync()
        # Restarted on the same persistent session: the poison was acknowledged, so it does not come back.
        consumer = TelemetryConsumer(database, durable_broker.url, config, name="poison", client_id="poison-durable")
        consumer.start_sync()
        marker = windows(baseline, device_id="good-marker", count=1, rows=20)[0]
        publish_all(client, [("good-marker", encode(marker))])
        wait_for(lambda: count(database, TelemetryWindowRow) == 1001)
    finally:
        client.loop_stop()
        client.disconnect()
        consumer.stop_sync()
    assert consumer.totals.received == 1, "nothing but the marker after the restart"
    assert reasons(database) == {"ingest_failed": 1}
    with database.transaction(write=False) as session:
        row = session.scalars(select(QuarantinedMessage)).one()
    assert row.device_id == "dev-poison" and row.window_seq == 1 and "poisoned" in row.detail
    assert len(set(stored_keys(database))) == 1001


def start_consumer(database: Database, broker: PrivateMosquitto, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.control_plane.telemetry.consumer_process", database.url, broker.url, mode],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    ready = threading.Event()
    threading.Thread(target=lambda: ready.set() if process.stdout and process.stdout.readline() else None,
                     daemon=True).start()
    assert ready.wait(60), "consumer process did not start"
    return process


@pytest.mark.mqtt
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["shared", "durable"])
def test_kill_9_of_the_consumer_mid_burst_loses_no_acknowledged_window(
        database: Database, dataset_id: str, sensor_model: None, baseline: Baseline,
        durable_broker: PrivateMosquitto, tmp_path: Path, mode: str) -> None:
    devices = [OutboxDevice(f"dev-{i:02d}", baseline, tmp_path, durable_broker.port, windows=80) for i in range(10)]
    expected = set().union(*(device.keys for device in devices))
    consumer = start_consumer(database, durable_broker, mode)
    try:
        with Pumper(devices) as pumper:
            wait_for(lambda: count(database, TelemetryWindowRow) >= 150, timeout=60)
            consumer.send_signal(signal.SIGKILL)  # mid-burst: batches in memory, PUBACKs given, commits pending
            consumer.wait(10)
            released_at_kill = set().union(*(device.released() for device in devices))
            stored_at_kill = set(stored_keys(database))
            # Devices keep sending while no consumer runs: the broker PUBACKs, nobody stores (shared) or
            # the persistent session queues (durable). Only the control plane's confirmation frees a row.
            time.sleep(1.0)
            consumer = start_consumer(database, durable_broker, mode)
            wait_for(lambda: pumper.pending() == 0, timeout=120)
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        for device in devices:
            device.close()
    keys = stored_keys(database)
    print(f"\n{mode}: {len(expected)} windows; at the kill {len(stored_at_kill)} stored, {len(released_at_kill)} "
          f"released by devices; after recovery {len(keys)} stored ({len(set(keys))} distinct)")
    assert len(stored_at_kill) < len(expected), "the kill happened mid-burst"
    assert released_at_kill <= stored_at_kill, "a device let go only of windows already stored"
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected, "each window exactly once"

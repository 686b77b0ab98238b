"""The MQTT ingest worker against a real private mosquitto: batches, duplicates, bad messages, shared subscription."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt
from sqlalchemy import func, select

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.mqtt.topics import device_topic
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.consumer import Inbox, TelemetryConsumer
from control_plane.telemetry.ingest import IncomingMessage, IngestResult
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from tests.control_plane.telemetry.simulate import encode
from tests.control_plane.telemetry.test_ingest import windows


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def count(database: Database, table: type) -> int:
    with database.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def publisher(broker: PrivateMosquitto) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_consumers_split_the_fleet_and_store_each_window_once(database: Database, dataset_id: str,
                                                             baseline: Baseline, mqtt_broker: PrivateMosquitto,
                                                             sensor_model: None) -> None:
    config = TelemetrySettings(batch_wait_ms=20)
    seen: list[IngestResult] = []
    consumers = [TelemetryConsumer(database, mqtt_broker.url, config, name=f"c{i}", on_ingest=seen.append)
                 for i in range(2)]
    for consumer in consumers:
        consumer.start_sync()
    client = publisher(mqtt_broker)
    try:
        fleet = {f"dev-{i:02d}": windows(baseline,
                                         device_id=f"dev-{i:02d}", count=5, rows=40) for i in range(20)}
        infos = []
        for device_id, messages in fleet.items():
            for message in messages + messages[:2]:  # every device repeats two windows (a lost PUBACK)
                infos.append(client.publish(device_topic(device_id, "telemetry"), encode(message), qos=1))
        infos.append(client.publish(device_topic("dev-00", "telemetry"), b"\xff\xfe garbage", qos=1))
        infos.append(client.publish(device_topic("dev-01", "telemetry"), encode(fleet["dev-02"][0]), qos=1))
        for info in infos:
            info.wait_for_publish(10)
        wait_for(lambda: count(database, TelemetryWindowRow) == 100 and count(database, QuarantinedMessage) == 2)
        wait_for(lambda: sum(c.totals.received for c in consumers) == 20 * 7 + 2)
    finally:
        client.loop_stop()
        client.disconnect()
        for consumer in consumers:
            consumer.stop_sync()
    totals = [c.totals for c in consumers]
    assert sum(t.stored for t in totals) == 100
    assert sum(t.duplicates for t in totals) == 40
    assert all(t.received > 0 for t in totals), "the shared subscription gives both consumers work"
    quarantine: Counter[str] = Counter()
    for t in totals:
        quarantine.update(t.quarantined)
    assert quarantine == {"malformed_json": 1, "device_mismatch": 1}
    assert {m for r in seen for m in r.models} == {("sensor-clf", 1)}


def test_a_durable_consumer_loses_nothing_across_a_broker_restart(database: Database, dataset_id: str,
                                                                  baseline: Baseline, sensor_model: None) -> None:
    broker = PrivateMosquitto(persistence=True, anonymous=True)
    broker.start()
    config = TelemetrySettings(batch_wait_ms=20, shared_subscription=False)
    consumer = TelemetryConsumer(database, broker.url, config, name="durable")
    consumer.start_sync()
    messages = windows(baseline, device_id="dev-d", count=10, rows=40)
    try:
        client = publisher(broker)
        for message in messages[:5]:
            client.publish(device_topic("dev-d", "telemetry"), encode(message), qos=1).wait_for_publish(10)
        wait_for(lambda: count(database, TelemetryWindowRow) == 5)
        client.loop_stop()
        broker.stop()
        broker.start()
        # Published before the consumer is back: the broker keeps them in the consumer's persistent session.
        client = publisher(broker)
        for message in messages[5:]:
            client.publish(device_topic("dev-d", "telemetry"), encode(message), qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        wait_for(lambda: count(database, TelemetryWindowRow) == 10)
    finally:
        consumer.stop_sync()
        broker.close()
    assert count(database, TelemetryWindowRow) == 10, "exactly-once storage"
    # At-least-once delivery: a PUBACK still on its way when the broker stopped gets its window redelivered
    # (seen once, on a loaded machine); the ingest counts it as a duplicate and stores nothing more.
    assert consumer.connection.connect_count >= 2 and consumer.totals.duplicates <= 5


def test_acks_after_each_commit_keep_a_small_receive_window_flowing(database: Database, dataset_id: str,
                                                                     baseline: Baseline,
                                                                     mqtt_broker: PrivateMosquitto,
                                                                     sensor_model: None) -> None:
    # The broker sends at most `receive_maximum` unacknowledged messages: without the batched PUBACKs after
    # each commit the consumer would stall at 10 of the 60 windows.
    config = TelemetrySettings(batch_size=5, batch_wait_ms=5, receive_maximum=10)
    consumer = TelemetryConsumer(database, mqtt_broker.url, config, name="small-window")
    assert consumer.ack_window == 10 and consumer.connection.receive_maximum == 10
    consumer.start_sync()
    client = publisher(mqtt_broker)
    try:
        for message in windows(baseline, device_id="dev-w", count=60, rows=20):
            client.publish(device_topic("dev-w", "telemetry"), encode(message), qos=1).wait_for_publish(10)
        wait_for(lambda: count(database, TelemetryWindowRow) == 60)
    finally:
        client.loop_stop()
        client.disconnect()
        consumer.stop_sync()
    assert consumer.totals.stored == 60 and consumer.failed_batches == 0


def test_inbox_fills_a_batch_to_its_limit_and_returns_a_partial_one_at_the_deadline() -> None:
    inbox = Inbox()
    received = [(IncomingMessage(payload=b"{}", received_at=0.0), mid, 1) for mid in range(5)]
    for item in received:
        inbox.put(item)
    assert inbox.take(limit=3, wait_seconds=60) == (received[:3], False)  # full: no wait for the deadline
    assert inbox.take(limit=3, wait_seconds=0.01) == (received[3:], False)  # deadline: what arrived
    inbox.put(received[0])
    inbox.put(None)
    assert inbox.take(limit=3, wait_seconds=60) == ([received[0]], True)  # a stop ends the batch at once

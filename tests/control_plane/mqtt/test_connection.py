"""The control plane's MQTT connection against real brokers: restart, shared subscriptions, 3.1.1 fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest

from control_plane.mqtt.broker import EmbeddedAmqtt, PrivateMosquitto
from control_plane.mqtt.connection import BrokerAddress, MqttConnection
from control_plane.mqtt.topics import device_id_from_topic, device_topic, fleet_filter


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto(anonymous=True) as instance:
        yield instance


def collector() -> tuple[list[bytes], Callable[[mqtt.MQTTMessage], None]]:
    received: list[bytes] = []
    lock = threading.Lock()

    def handle(message: mqtt.MQTTMessage) -> None:
        with lock:
            received.append(message.payload)

    return received, handle


def test_resubscribes_after_broker_restart(broker: PrivateMosquitto) -> None:
    received, handle = collector()
    consumer = MqttConnection(broker.url, "cp-consumer")
    consumer.subscribe(fleet_filter("status"), handle)
    consumer.start()
    publisher = MqttConnection(broker.url, "cp-publisher")
    publisher.start()
    publisher.publish(device_topic("d1", "status"), b"before")
    assert wait_until(lambda: received == [b"before"])

    broker.restart()
    assert wait_until(lambda: consumer.connect_count >= 2 and publisher.connected.is_set())
    publisher.publish(device_topic("d1", "status"), b"after")
    assert wait_until(lambda: received == [b"before", b"after"])
    consumer.stop()
    publisher.stop()


def test_two_replicas_split_a_shared_subscription(broker: PrivateMosquitto) -> None:
    first, handle_first = collector()
    second, handle_second = collector()
    replicas = [MqttConnection(broker.url, f"cp-{n}") for n in range(2)]
    for replica, handle in zip(replicas, (handle_first, handle_second), strict=True):
        replica.subscribe(fleet_filter("telemetry"), handle)
        replica.start()
    assert all(r.shared_available for r in replicas)
    publisher = MqttConnection(broker.url, "publisher")
    publisher.start()
    for i in range(200):
        publisher.publish(device_topic(f"d{i % 7}", "telemetry"), str(i).encode())
    assert wait_until(lambda: len(first) + len(second) == 200)
    assert first and second and not set(first) & set(second)  # split, no duplicates
    for connection in (*replicas, publisher):
        connection.stop()


def test_a_failing_handler_does_not_stop_delivery(broker: PrivateMosquitto) -> None:
    received, handle = collector()

    def flaky(message: mqtt.MQTTMessage) -> None:
        if message.payload == b"bad":
            raise ValueError("malformed")
        handle(message)

    consumer = MqttConnection(broker.url, "flaky")
    consumer.subscribe(fleet_filter("presence"), flaky)
    consumer.start()
    publisher = MqttConnection(broker.url, "pub")
    publisher.start()
    for payload in (b"bad", b"good"):
        publisher.publish(device_topic("d", "presence"), payload)
    assert wait_until(lambda: received == [b"good"])
    consumer.stop()
    publisher.stop()


def test_amqtt_fallback_speaks_3_1_1_without_shared_subscriptions() -> None:
    broker = EmbeddedAmqtt().start()
    received, handle = collector()
    try:
        consumer = MqttConnection(broker.url, "c", protocol="3.1.1")
        consumer.subscribe(fleet_filter("status"), handle)
        consumer.start()
        assert consumer.shared_available is False
        publisher = MqttConnection(broker.url, "p", protocol="3.1.1")
        publisher.start()
        publisher.publish(device_topic("d9", "status"), b"ok")
        assert wait_until(lambda: received == [b"ok"])
        consumer.stop()
        publisher.stop()
    finally:
        broker.stop()


def test_topics_and_addresses() -> None:
    assert device_id_from_topic("edgeloop/devices/dev-1/status") == "dev-1"
    assert device_id_from_topic("edgeloop/devices//status") is None
    assert device_id_from_topic("other/devices/dev-1/status") is None
    assert BrokerAddress.parse("mqtt://u:p@broker:1884") == BrokerAddress("broker", 1884, "u", "p")
    with pytest.raises(ValueError):
        BrokerAddress.parse("http://broker")

"""The generated ACL, enforced by a real mosquitto: a device reaches only its own topics."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.fleet.acl import CONTROL_PLANE_USER
from control_plane.mqtt.broker import PrivateMosquitto
from tests.control_plane.fleet.conftest import wait_for

pytestmark = pytest.mark.mqtt
USERS = {CONTROL_PLANE_USER: "cp-secret", "dev-1": "one-secret", "dev-2": "two-secret"}


class Client:
    """A connected paho client that records what it receives."""

    def __init__(self, port: int, user: str, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}",
                                  protocol=protocol)
        self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((message.topic, bytes(message.payload)))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def topics(self) -> set[str]:
        with self.lock:
            return {topic for topic, _ in self.got}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def acl_broker() -> Any:
    """A mosquitto that requires passwords and enforces the generated ACL."""
    broker = PrivateMosquitto()  # password file + generated ACL by default
    for user, password in USERS.items():
        broker.add_user(user, password)
    assert "pattern write edgeloop/devices/%u/status" in (broker.workdir / "edgeloop.acl").read_text()
    broker.start()
    yield broker
    broker.close()


def test_devices_are_confined_to_their_own_topics(acl_broker: PrivateMosquitto) -> None:
    cp = Client(acl_broker.port, CONTROL_PLANE_USER, protocol=mqtt.MQTTv5)
    dev1 = Client(acl_broker.port, "dev-1")
    try:
        cp.subscribe("$share/edgeloop-cp/edgeloop/devices/+/status")
        cp.subscribe("edgeloop/devices/+/presence")
        cp.publish("edgeloop/devices/dev-1/manifest", b"for-1", retain=True)
        cp.publish("edgeloop/devices/dev-2/manifest", b"for-2", retain=True)
        dev1.subscribe("edgeloop/devices/dev-1/manifest")
        dev1.subscribe("edgeloop/devices/dev-2/manifest")  # granted at SUBSCRIBE, but never delivered
        dev1.subscribe("edgeloop/devices/+/status")
        dev1.publish("edgeloop/devices/dev-1/status", b"mine")
        dev1.publish("edgeloop/devices/dev-1/presence", b"here")
        dev1.publish("edgeloop/devices/dev-2/status", b"forged")
        dev1.publish("edgeloop/devices/dev-1/manifest", b"self-signed?", retain=True)
        wait_for(lambda: {"edgeloop/devices/dev-1/status", "edgeloop/devices/dev-1/presence"} <= cp.topics())
        time.sleep(0.5)  # Give anything that should not arrive the chance to arrive.
        assert cp.topics() == {"edgeloop/devices/dev-1/status", "edgeloop/devices/dev-1/presence"}
        assert dev1.got == [("edgeloop/devices/dev-1/manifest", b"for-1")]
    finally:
        cp.close()
        dev1.close()

"""MQTT topics, presence payloads and the daemon's reconnecting paho client."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import EdgeConfig

log = logging.getLogger(__name__)
PRESENCE_SCHEMA = "edgeloop.presence/v1"
TOPIC_KINDS = ("manifest", "status", "presence", "telemetry")


def device_topic(device_id: str, kind: str) -> str:
    """Return edgeloop/devices/{device_id}/{kind}."""
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"edgeloop/devices/{device_id}/{kind}"


def presence_payload(device_id: str, online: bool, model: dict[str, Any] | None, slot: str | None) -> bytes:
    """Encode a presence message (also used, with online=False, as the last will)."""
    body = {"schema": PRESENCE_SCHEMA, "device_id": device_id, "online": online, "model": model,
            "slot": slot, "ts": time.time()}
    return json.dumps(body).encode()


def make_client(config: EdgeConfig, client_id: str | None = None) -> mqtt.Client:
    """Create a paho client (API v2, MQTT 3.1.1) with the device's reconnect policy."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"edge-{config.device_id}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.reconnect_delay_set(max(1, int(config.reconnect_min_s)), max(1, int(config.reconnect_max_s)))
    # QoS 1 status events wait here while the broker is away instead of being dropped.
    client.max_queued_messages_set(10000)
    if config.broker_username:
        client.username_pw_set(config.broker_username, config.broker_password)
    if config.broker_tls:
        # Verifies the broker's certificate chain (broker_ca_file, else the system CAs) and its host name.
        client.tls_set(ca_certs=str(config.broker_ca_file) if config.broker_ca_file else None,
                       certfile=str(config.broker_client_cert) if config.broker_client_cert else None,
                       keyfile=str(config.broker_client_key) if config.broker_client_key else None)
    return client


class MqttLink:
    """One device's broker connection: will, presence, manifest subscription, reconnects."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        on_manifest: Callable[[bytes], None],
        presence: Callable[[bool], bytes],
    ) -> None:
        self.config = config
        self.on_manifest = on_manifest
        self.presence = presence
        self.connected = threading.Event()
        self.client = make_client(config)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.publish_listeners: list[Callable[[int], object]] = []
        self.connect_listeners: list[Callable[[], None]] = []
        self.manifest_topic = device_topic(config.device_id, "manifest")
        self.presence_topic = device_topic(config.device_id, "presence")
        self.extra: dict[str, Callable[[bytes], None]] = {}  # e.g. a staged rollout's cut-over topic

    def subscribe_extra(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe to one more topic (kept across reconnects) and hand its messages to handler."""
        self.extra[topic] = handler
        if self.connected.is_set():
            self.client.subscribe(topic, qos=1)

    def start(self) -> None:
        """Connect in the background; paho's loop thread retries until the broker answers."""
        self.client.will_set(self.presence_topic, self.presence(False), qos=1, retain=True)
        self.client.connect_async(self.config.broker_host, self.config.broker_port, self.config.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Publish offline presence, disconnect cleanly and stop the loop thread."""
        if self.connected.is_set():
            info = self.client.publish(self.presence_topic, self.presence(False), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Publish (queued by paho while disconnected for QoS >= 1); return paho's mid, None if refused."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s refused: %s", topic, mqtt.error_string(info.rc))
            return None
        return int(info.mid)

    def publish_presence(self) -> None:
        """Publish retained online presence (after connect and after each activation)."""
        self.publish(self.presence_topic, self.presence(True), retain=True)
        # The will is fixed per CONNECT: refresh it so the next session's will names the current model.
        self.client.will_set(self.presence_topic, self.presence(False), qos=1, retain=True)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        log.info("connected to %s:%s", self.config.broker_host, self.config.broker_port)
        # Subscriptions do not survive a clean session: resubscribe on every connect.
        client.subscribe(self.manifest_topic, qos=1)
        for topic in list(self.extra):
            client.subscribe(topic, qos=1)
        self.publish_presence()
        self.connected.set()
        for listener in self.connect_listeners:
            try:
                listener()
            except Exception:
                log.exception("connect listener failed")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any
    ) -> None:
        self.connected.clear()
        log.warning("disconnected from broker (%s); paho will reconnect", reason_code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        # Called on paho's network thread when the broker acknowledged a QoS 1 publish (PUBACK).
        for listener in self.publish_listeners:
            try:
                listener(mid)
            except Exception:
                log.exception("publish listener failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An empty payload is the control plane clearing the retained manifest (after an abort): nothing to do.
        if message.topic == self.manifest_topic and message.payload:
            self.on_manifest(bytes(message.payload))
        elif message.payload and (handler := self.extra.get(message.topic)) is not None:
            handler(bytes(message.payload))

"""A paho-mqtt 2 client that reconnects with backoff, resubscribes, and uses shared subscriptions when offered."""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from control_plane.errors import ServiceUnavailable

if TYPE_CHECKING:
    from control_plane.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]
Protocol = Literal["5", "3.1.1"]
_MAX_ROUTES = 100_000
_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id (MQTT 5: reason 0 implied)


PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")
_TLS_OPTIONS = ("ca_file", "certfile", "keyfile")


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to connect, parsed from ``mqtt[s]://user:pass@host:port?ca_file=..&certfile=..&keyfile=..``.

    One URL carries everything, so every component that opens a connection (bridge, telemetry consumers)
    authenticates the same way; `client_url(settings)` builds it from the EDGELOOP_MQTT_* settings.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse an mqtt:// or mqtts:// URL (TLS options only with mqtts://)."""
        parsed = urlparse(url)
        if parsed.scheme not in PLAIN_SCHEMES + TLS_SCHEMES or not parsed.hostname:
            # Never echo the URL: it may carry the password.
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got scheme {parsed.scheme!r}")
        tls = parsed.scheme in TLS_SCHEMES
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(query) - set(_TLS_OPTIONS)
        if unknown or (query and not tls):
            raise ValueError(f"unexpected URL options {sorted(query)}: only {_TLS_OPTIONS}, and only with mqtts://")
        if bool(query.get("certfile")) != bool(query.get("keyfile")):
            raise ValueError("a client certificate needs both certfile and keyfile")
        return cls(parsed.hostname, parsed.port or (8883 if tls else 1883),
                   unquote(parsed.username) if parsed.username is not None else None,
                   unquote(parsed.password) if parsed.password is not None else None,
                   tls, query.get("ca_file"), query.get("certfile"), query.get("keyfile"))


def client_url(settings: Settings) -> str:
    """Return settings.mqtt_url with the control plane's credentials and TLS files folded in."""
    assert settings.mqtt_url is not None
    parsed = urlparse(settings.mqtt_url)
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    if settings.mqtt_username:
        userinfo = quote(settings.mqtt_username, safe="")
        if settings.mqtt_password is not None:
            userinfo += ":" + quote(settings.mqtt_password, safe="")
        netloc = f"{userinfo}@{netloc}"
    elif "@" in parsed.netloc:
        netloc = parsed.netloc
    options = {name: str(value) for name, value in (("ca_file", settings.mqtt_ca_file),
                                                     ("certfile", settings.mqtt_client_cert),
                                                     ("keyfile", settings.mqtt_client_key)) if value}
    query = urlencode(options) if options else parsed.query
    url = parsed._replace(netloc=netloc, query=query).geturl()
    address = BrokerAddress.parse(url)  # refuse a bad combination at startup, not at the first reconnect
    if address.username is None:
        log.warning("connecting to the MQTT broker anonymously: set EDGELOOP_MQTT_USERNAME/PASSWORD "
                    "(docs/broker-auth.md)")
    return url


@dataclass
class _Subscription:
    topic_filter: str
    handler: Handler
    qos: int
    shared: bool


class MqttConnection:
    """One broker connection; handlers run on paho's network thread, so they must be quick."""

    def __init__(self, url: str, client_id: str, *, protocol: Protocol = "5", shared_group: str = "edgeloop-cp",
                 keepalive: int = 30, receive_maximum: int | None = None) -> None:
        self.address = BrokerAddress.parse(url)
        self.protocol = protocol
        self.shared_group = shared_group
        self.keepalive = keepalive
        # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us. Mosquitto
        # otherwise applies its max_inflight_messages (100), which caps a manually acknowledged batch.
        self.receive_maximum = receive_maximum
        self.connected = threading.Event()
        # Set once connected *and* every subscription's SUBACK is back: before that, a message published by
        # someone else can reach the broker ahead of our SUBSCRIBE and, for a new session, is simply not ours.
        self.ready = threading.Event()
        self._pending_subacks: set[int] = set()
        self.shared_available = False
        self.connect_count = 0
        self._subscriptions: list[_Subscription] = []
        # topic -> subscriptions whose filter matches it. paho's per-message trie walk (message_callback_add)
        # cost more than the rest of the dispatch; device topics repeat, so a bounded cache answers instead.
        self._routes: dict[str, tuple[_Subscription, ...]] = {}
        self._lock = threading.Lock()
        version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if protocol == "5" else {"clean_session": True}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kwargs)
        if self.address.username:
            self.client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            # Verifies the broker's certificate against ca_file (or the system CAs) and its host name.
            self.client.tls_set(ca_certs=self.address.ca_file, certfile=self.address.certfile,
                                keyfile=self.address.keyfile)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Bound paho's own queue: past it, publish() fails loudly instead of eating memory during an outage.
        self.client.max_queued_messages_set(10_000)
        self.client.max_inflight_messages_set(100)
        self.client.on_message = self._route
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1, shared: bool = True) -> None:
        """Register a handler; it is (re)subscribed on every connect, shared across replicas if possible."""
        subscription = _Subscription(topic_filter, handler, qos, shared)
        with self._lock:
            self._subscriptions.append(subscription)
            self._routes = {}
            if self.connected.is_set():
                self._subscribe_one(subscription)

    def _route(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        subscriptions = self._routes.get(topic)
        if subscriptions is None:
            with self._lock:
                subscriptions = tuple(s for s in self._subscriptions if mqtt.topic_matches_sub(s.topic_filter, topic))
                if len(self._routes) >= _MAX_ROUTES:  # topics are device-chosen: never grow without bound
                    self._routes = {}
                self._routes[topic] = subscriptions
        for subscription in subscriptions:
            self._dispatch(subscription, message)

    def _dispatch(self, subscription: _Subscription, message: mqtt.MQTTMessage) -> None:
        try:
            subscription.handler(message)
        except Exception:  # one bad message must never kill the network thread
            log.exception("handler for %s failed on %s", subscription.topic_filter, message.topic)

    def _subscribe_one(self, subscription: _Subscription) -> None:
        # Called with self._lock held, so the SUBACK (handled under the same lock) cannot overtake the mid.
        topic = subscription.topic_filter
        if subscription.shared and self.shared_available:
            topic = f"$share/{self.shared_group}/{topic}"
        result, mid = self.client.subscribe(topic, qos=subscription.qos)
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subacks.add(mid)
            self.ready.clear()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      _properties: Properties | None) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.warning("broker refused a subscription: %s", code)
        with self._lock:
            self._pending_subacks.discard(mid)
            if not self._pending_subacks and self.connected.is_set():
                self.ready.set()

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        # MQTT 5 brokers advertise shared-subscription support in CONNACK; absent means available.
        advertised = getattr(properties, "SharedSubscriptionAvailable", 1) if properties is not None else 1
        self.shared_available = self.protocol == "5" and bool(advertised)
        self.connect_count += 1
        with self._lock:
            self._pending_subacks.clear()
            self.connected.set()
            for subscription in self._subscriptions:
                self._subscribe_one(subscription)
            if not self._pending_subacks:
                self.ready.set()
        log.info("connected to %s:%s (MQTT %s, shared=%s)", self.address.host, self.address.port, self.protocol,
                 self.shared_available)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode,
                       _properties: Properties | None) -> None:
        self.connected.clear()
        self.ready.clear()
        if reason_code.value == 0:  # our own disconnect() during shutdown
            log.info("disconnected from broker")
        else:
            log.warning("disconnected from broker: %s (paho reconnects with backoff)", reason_code)

    def connect_properties(self) -> Properties | None:
        """Return the MQTT 5 CONNECT properties this connection asks for (None on 3.1.1 or when there are none)."""
        if self.protocol != "5" or not self.receive_maximum:
            return None
        properties = Properties(PacketTypes.CONNECT)
        properties.ReceiveMaximum = min(self.receive_maximum, 65_535)
        return properties

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect in the background; with a timeout, wait until subscribed (or raise ServiceUnavailable)."""
        self.client.connect_async(self.address.host, self.address.port, keepalive=self.keepalive,
                                  properties=self.connect_properties())
        self.client.loop_start()
        if timeout is not None and not self.ready.wait(timeout):
            raise ServiceUnavailable(f"MQTT broker {self.address.host}:{self.address.port} not reachable")

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                timeout: float = 10.0) -> None:
        """Publish and, for QoS > 0, wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise ServiceUnavailable(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos > 0:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise ServiceUnavailable(f"broker did not acknowledge {topic} within {timeout:.0f}s")

    def ack_many(self, acks: Iterable[tuple[int, int]]) -> None:
        """Acknowledge manually-acked messages given as (mid, qos), the QoS 1 ones in a single socket write.

        paho's `ack()` queues one packet per message, and its network thread wakes and calls send() for each;
        one concatenated write of 4-byte PUBACKs costs a fraction of that. paho has no public batch call, so
        this uses its packet queue when present and falls back to `ack()` otherwise (and for QoS 2).
        """
        packet_ids = []
        for mid, qos in acks:
            if qos == 1:
                packet_ids.append(mid)
            elif qos == 2:
                self.client.ack(mid, qos)
        if not packet_ids:
            return
        queue_packet = getattr(self.client, "_packet_queue", None)
        manual = getattr(self.client, "_manual_ack", None)
        if queue_packet is None or manual is None:  # pragma: no cover - a paho without the private hooks
            for mid in packet_ids:
                self.client.ack(mid, 1)
            return
        if not manual:  # paho already acknowledged them on receipt, as ack() assumes
            return
        packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in packet_ids])
        queue_packet(mqtt.PUBACK, packet, packet_ids[-1], 1)

    def publish_many_at_most_once(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Publish (topic, payload) pairs with QoS 0 in one socket write; best effort, dropped while disconnected.

        For small, frequent, idempotent notices (telemetry acks, one per device per batch): paho's publish()
        costs ~100 us each in Python; these PUBLISH packets are built here and queued as one write, like
        `ack_many`. Falls back to publish() on a paho without the private hook.
        """
        if not self.connected.is_set():
            return
        queue_packet = getattr(self.client, "_packet_queue", None)
        if queue_packet is None:  # pragma: no cover - a paho without the private hook
            for topic, payload in messages:
                self.client.publish(topic, payload, qos=0)
            return
        properties = b"\x00" if self.protocol == "5" else b""  # MQTT 5: an empty property list
        packets = []
        for topic, payload in messages:
            encoded = topic.encode()
            body = struct.pack("!H", len(encoded)) + encoded + properties + payload
            packets.append(bytes([mqtt.PUBLISH]) + _remaining_length(len(body)) + body)
        if packets:
            # Queued under a non-PUBLISH command so paho does not look for a message-info object to complete.
            queue_packet(mqtt.PUBACK, b"".join(packets), 0, 0)

    def stop(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()


def _remaining_length(length: int) -> bytes:
    """Encode an MQTT Remaining Length (variable-length integer, 7 bits a byte)."""
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)

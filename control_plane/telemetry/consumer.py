"""The MQTT ingest worker: a shared subscription feeding a batcher thread that writes one transaction per batch."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from control_plane.db.session import Database
from control_plane.errors import ServiceUnavailable
from control_plane.mqtt.connection import MqttConnection
from control_plane.mqtt.topics import device_id_from_topic, fleet_filter
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, IngestResult, WindowIngestor

log = logging.getLogger(__name__)
OnIngest = Callable[[IngestResult], None]
Received = tuple[IncomingMessage, int, int]  # message, MQTT packet id, QoS


class Inbox:
    """Hand-off from paho's network thread to the batcher: a deque plus an event set when work is due.

    queue.Queue takes a lock and notifies a condition on every put and get (~25 us per message here);
    deque.append is atomic. The event is set only when the batcher has something to do: the first message
    of a batch, enough messages to fill it, or a stop. Within a batch window the batcher sleeps until its
    deadline instead of waking (and taking the GIL) once per message.
    """

    def __init__(self) -> None:
        self._items: deque[Received | None] = deque()
        self._ready = threading.Event()
        self._wake_at = 1  # queued items that make put() wake the batcher
        self._stop_queued = False

    def put(self, item: Received | None) -> None:
        """Add one message (None: stop), waking the batcher if it now has work."""
        self._items.append(item)
        if item is None:
            self._stop_queued = True
            self._ready.set()
        elif len(self._items) >= self._wake_at and not self._ready.is_set():
            self._ready.set()

    def take(self, limit: int, wait_seconds: float) -> tuple[list[Received], bool]:
        """Block for the first message, then gather up to `limit` for at most `wait_seconds`; True on stop."""
        items, ready = self._items, self._ready
        self._wake_at = 1
        while not items:
            # Clear before looking: a put() after the look sets the event again, so no wake-up is lost.
            ready.clear()
            if not items:
                ready.wait()
        batch: list[Received] = []
        deadline = time.monotonic() + wait_seconds
        while True:
            while items and len(batch) < limit:
                item = items.popleft()
                if item is None:
                    return batch, True
                batch.append(item)
            remaining = deadline - time.monotonic()
            if len(batch) >= limit or remaining <= 0:
                return batch, False
            self._wake_at = limit - len(batch)
            ready.clear()
            if len(items) >= self._wake_at or self._stop_queued:
                continue
            ready.wait(remaining)


class TelemetryConsumer:
    """Subscribe to every device's telemetry; batch up to `batch_size` messages or `batch_wait_ms`.

    With `manual_ack` the PUBACK for each message is sent only after its batch committed, so a crash
    between receipt and commit makes the broker redeliver (at-least-once; the unique key makes it
    exactly-once in storage). The number of unacknowledged messages the broker may send (`ack_window`:
    MQTT 5 Receive Maximum, else mosquitto's `max_inflight_messages`) then bounds a batch. By default it
    is twice `batch_size`, so the next batch streams in while this one is written.
    """

    def __init__(self, database: Database, mqtt_url: str, config: TelemetrySettings, *,
                 name: str = "telemetry-ingest", on_ingest: OnIngest | None = None, ack_window: int | None = None,
                 ingestor: WindowIngestor | None = None, client_id: str | None = None) -> None:
        self.name = name
        self.database = database
        self.config = config
        self.on_ingest = on_ingest
        self.ack_window = ack_window or config.receive_maximum or 2 * config.batch_size
        self.ingestor = ingestor or WindowIngestor(config)
        # A stable id per consumer slot, so a restarted consumer resumes its broker session (and the
        # windows queued in it) instead of leaving an orphan session that keeps receiving its share.
        self.client_id = client_id or f"{config.client_id_prefix}-{socket.gethostname()}-{name}"[:64]
        self.connection = MqttConnection(mqtt_url, self.client_id, receive_maximum=self.ack_window)
        # Back quickly after a broker restart: until a consumer is back, shared-subscription messages are dropped.
        self.connection.client.reconnect_delay_set(min_delay=0.1, max_delay=5)  # type: ignore[arg-type]  # floats work
        self.connection.client.manual_ack_set(config.manual_ack)
        self._inbox = Inbox()
        self._thread: threading.Thread | None = None
        self.failed_batches = 0

    @property
    def totals(self) -> IngestResult:
        """Return the counts since start."""
        return self.ingestor.totals

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        incoming = IncomingMessage(payload=bytes(message.payload), received_at=time.time(), source="mqtt",
                                   topic=message.topic, device_hint=device_id_from_topic(message.topic))
        self._inbox.put((incoming, message.mid, message.qos))

    async def start(self) -> None:
        """Start the batcher thread, then subscribe and connect in the background."""
        self.start_sync(timeout=None)

    def start_sync(self, timeout: float | None = 10.0) -> None:
        """Start the batcher, subscribe, connect; with a timeout, wait for the first connection."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self.connection.subscribe(fleet_filter("telemetry"), self._on_message, qos=1,
                                  shared=self.config.shared_subscription)
        # Persistent sessions only for the durable plain subscription: a persistent session in a $share group
        # keeps taking its turn of messages while its consumer is gone (measured on mosquitto 2.0.11), so a
        # retired consumer would swallow its share until the session expires.
        if self.config.shared_subscription or self.config.session_expiry_seconds <= 0 or \
                self.connection.protocol != "5":
            self.connection.start(timeout=timeout)
            return
        # MqttConnection.start() always asks for a clean session; resume ours instead (same client and
        # callbacks, so reconnects and resubscriptions stay MqttConnection's).
        properties = self.connection.connect_properties() or Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry_seconds
        address = self.connection.address
        self.connection.client.connect_async(address.host, address.port, keepalive=self.connection.keepalive,
                                             clean_start=False, properties=properties)
        self.connection.client.loop_start()
        if timeout is not None and not self.connection.ready.wait(timeout):
            raise ServiceUnavailable(f"MQTT broker {address.host}:{address.port} not reachable")

    async def stop(self) -> None:
        """Stop receiving, write what is queued, stop the thread."""
        self.stop_sync()

    def stop_sync(self) -> None:
        """Synchronous stop."""
        self.connection.stop()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(30)

    def _collect(self) -> tuple[list[Received], bool]:
        limit = min(self.config.batch_size, self.ack_window) if self.config.manual_ack else self.config.batch_size
        return self._inbox.take(limit, self.config.batch_wait_ms / 1000.0)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._write(batch)

    def _write(self, batch: list[Received]) -> None:
        messages = [item[0] for item in batch]
        for attempt in range(5):
            try:
                with self.database.transaction() as session:
                    result = self.ingestor.ingest(session, messages, now=time.time())
                self.ingestor.totals.add(result)
                break
            except Exception:
                log.exception("telemetry batch of %d failed (attempt %d)", len(messages), attempt + 1)
                time.sleep(0.2 * (attempt + 1))
        else:
            # Not acknowledged: the broker redelivers these after our reconnect.
            self.failed_batches += 1
            return
        if self.config.manual_ack:
            self.connection.ack_many((mid, qos) for _, mid, qos in batch)
        if self.on_ingest is not None and result.models:
            try:
                self.on_ingest(result)
            except Exception:
                log.exception("on_ingest hook failed")

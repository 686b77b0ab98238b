"""The MQTT ingest worker: a shared subscription feeding a batcher thread that writes one transaction per batch."""

from __future__ import annotations

import hashlib
import json
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
from control_plane.mqtt.topics import device_id_from_topic, fleet_filter, telemetry_ack_topic
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, IngestResult, WindowIngestor, WindowOutcome
from control_plane.telemetry.sanity import Rejected
from control_plane.telemetry.store import UNAVAILABLE, insert_quarantine

log = logging.getLogger(__name__)
ACK_SCHEMA = "edgeloop.telemetry-ack/v1"
RETRY_LATER = frozenset({"rate_limited"})  # quarantine reasons a device should resend, so not confirmed
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

    After each commit the settled window_seqs are confirmed to their devices (`device_acks`), which keep a
    window in their outbox until then: a consumer that dies after the broker's PUBACK (or a shared group with
    nobody subscribed) costs a resend, not the window. A message that fails the ingest on its own
    `poison_attempts` times is quarantined and acknowledged, so it cannot block the queue.
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
        self._stopping = False
        self._failures: dict[bytes, int] = {}  # payload digest -> failed attempts on its own
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
        self._stopping = True
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
        settled, result = self._settle(batch)
        if settled and self.config.device_acks:
            self._acknowledge_devices(settled)
        if self.config.manual_ack and settled:
            self.connection.ack_many((mid, qos) for (_, mid, qos), _ in settled)
        if self.on_ingest is not None and result.models:
            try:
                self.on_ingest(result)
            except Exception:
                log.exception("on_ingest hook failed")

    def _settle(self, batch: list[Received]) -> tuple[list[tuple[Received, WindowOutcome]], IngestResult]:
        """Commit the batch; if it fails as a whole, split it until only the failing messages are left.

        A message that fails on its own `poison_attempts` times is quarantined (`ingest_failed`) and settled,
        so it never blocks the queue. While the database is unavailable nothing is settled: the batch is
        retried with backoff, and on stop its messages stay unacknowledged for the broker or device to resend.
        """
        settled: list[tuple[Received, WindowOutcome]] = []
        total = IngestResult()
        pending = [batch]
        while pending:
            part = pending.pop()
            outcome = self._commit(part)
            if outcome is None:  # stopping while the database is away
                self.failed_batches += 1
                continue
            if isinstance(outcome, IngestResult):
                self.ingestor.totals.add(outcome)
                total.add(outcome)
                settled += zip(part, outcome.outcomes, strict=True)
                continue
            if len(part) > 1:
                middle = len(part) // 2
                pending += [part[middle:], part[:middle]]
                continue
            received = part[0]
            key = hashlib.blake2b(received[0].payload, digest_size=16).digest()
            attempts = self._failures[key] = self._failures.get(key, 0) + 1
            if attempts < self.config.poison_attempts:
                time.sleep(min(0.1 * attempts, 1.0))
                pending.append(part)
                continue
            quarantined = self._quarantine_poison(received[0], outcome)
            if quarantined is None:
                self.failed_batches += 1
                continue
            self._failures.pop(key, None)
            total.quarantined["ingest_failed"] += 1
            self.ingestor.totals.quarantined["ingest_failed"] += 1
            settled.append((received, quarantined))
        if len(self._failures) > 10_000:  # only ever poison messages: keep the bookkeeping bounded
            self._failures.clear()
        return settled, total

    def _commit(self, part: list[Received]) -> IngestResult | Exception | None:
        """Ingest `part` in one transaction; retry while the database is unavailable (None once stopping)."""
        messages = [item[0] for item in part]
        delay = 0.2
        while True:
            try:
                with self.database.transaction() as session:
                    return self.ingestor.ingest(session, messages, now=time.time())
            except UNAVAILABLE:
                log.warning("database unavailable; retrying a telemetry batch of %d in %.1fs", len(part), delay)
            except Exception as exc:
                log.exception("telemetry batch of %d failed", len(part))
                return exc
            if self._stopping:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _quarantine_poison(self, message: IncomingMessage, error: Exception) -> WindowOutcome | None:
        """Record a message that keeps failing with the error it raised; None while the database is away."""
        device_id, seq = _identify(message)
        rejected = Rejected("ingest_failed", f"failed {self.config.poison_attempts} times: "
                            f"{type(error).__name__}: {str(error)[:300]}", device_id, seq)
        while True:
            try:
                with self.database.transaction() as session:
                    insert_quarantine(session, [self.ingestor.quarantine_row(message, rejected)])
                log.error("quarantined a telemetry message that failed %d times (%s)", self.config.poison_attempts,
                          type(error).__name__)
                return WindowOutcome("quarantined", rejected.device_id, rejected.window_seq, rejected.reason)
            except Exception:
                log.exception("could not quarantine a failing telemetry message")
            if self._stopping:
                return None
            time.sleep(1.0)

    def _acknowledge_devices(self, settled: list[tuple[Received, WindowOutcome]]) -> None:
        """Tell each device which of its windows are settled, so it can delete them from its outbox."""
        seqs: dict[str, list[int]] = {}
        for (message, _, _), outcome in settled:
            # The topic's device, never the payload's: a device must not make us ack another device's windows.
            # A rate-limited window is refused for now, not for good: unconfirmed, the device sends it again
            # later, so a device catching up after an outage loses nothing to its own burst.
            if message.device_hint is not None and outcome.window_seq is not None and outcome.reason not in RETRY_LATER:
                seqs.setdefault(message.device_hint, []).append(outcome.window_seq)
        if seqs:
            self.connection.publish_many_at_most_once(
                (telemetry_ack_topic(device), _ack_payload(values)) for device, values in seqs.items())


def _ack_payload(seqs: list[int]) -> bytes:
    return b'{"schema":"%s","seqs":[%s]}' % (ACK_SCHEMA.encode(), ",".join(map(str, sorted(set(seqs)))).encode())


def _identify(message: IncomingMessage) -> tuple[str | None, int | None]:
    """Return the device and window_seq a message claims, if it can be read at all."""
    try:
        document = json.loads(message.payload)
        seq = document.get("window_seq")
        device = document.get("device_id")
    except Exception:
        return message.device_hint, None
    return (device if isinstance(device, str) else message.device_hint,
            seq if type(seq) is int and 0 <= seq < 2**63 else None)

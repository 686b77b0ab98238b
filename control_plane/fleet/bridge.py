"""The MQTT bridge worker: publish pending manifests, consume status and presence, drive rollouts."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.fleet import bluegreen, events, rollouts
from control_plane.fleet.broker_auth import BrokerAuthFiles
from control_plane.fleet.manifests import ManifestFactory, factory_for
from control_plane.fleet.models import Cutover, Device, DeviceEvent, Manifest, Rollout, RolloutTarget
from control_plane.fleet.schemas import IN_FLIGHT_STATES, RolloutState
from control_plane.mqtt.connection import MqttConnection, Protocol, client_url
from control_plane.mqtt.topics import device_topic, fleet_filter
from control_plane.settings import Settings

log = logging.getLogger(__name__)
BATCH = 1000
PUBLISH_TIMEOUT_S = 10.0


@dataclass
class BridgeStats:
    """Counters for operators and tests."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    malformed: int = 0
    quarantined: int = 0
    published: int = 0
    republish_rounds: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def publish_pending(session: Session, connection: MqttConnection, limit: int = 5000) -> int:
    """Publish the newest unpublished manifest of each device (retained, QoS 1) and mark them published."""
    cutovers = publish_cutovers(session, connection)
    query = select(Manifest).where(Manifest.published_at.is_(None)).order_by(Manifest.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # Two replicas split the backlog, never double-send.
    pending = list(session.scalars(query))
    if not pending:
        return cutovers
    newest: dict[str, Manifest] = {}
    for manifest in pending:
        if manifest.device_id not in newest or manifest.sequence > newest[manifest.device_id].sequence:
            newest[manifest.device_id] = manifest
    infos = []
    for manifest in newest.values():
        info = connection.client.publish(device_topic(manifest.device_id, "manifest"), manifest.envelope,
                                         qos=1, retain=True)
        infos.append((manifest, info))
    now = utcnow()
    sent = 0
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    for manifest, info in infos:
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError):  # Queue full or connection lost: stays pending for the next round.
            continue
        if info.is_published():
            manifest.published_at = now
            sent += 1
    for manifest in pending:  # Superseded by a newer manifest of the same device: never sent.
        if manifest.published_at is None and newest[manifest.device_id] is not manifest:
            manifest.published_at = now
    return sent + cutovers


def publish_cutovers(session: Session, connection: MqttConnection) -> int:
    """Publish queued blue-green cut-over commands, retained on their rollout's topic, oldest first."""
    commands = bluegreen.pending_cutovers(session)
    if session.get_bind().dialect.name == "postgresql" and commands:
        # Two replicas: only the one that locks a command sends it.
        commands = list(session.scalars(select(Cutover).where(Cutover.id.in_([c.id for c in commands]),
                                                             Cutover.published_at.is_(None))
                                        .with_for_update(skip_locked=True)))
    sent = []
    for command in commands:
        info = connection.client.publish(bluegreen.cutover_topic(command.rollout_id), command.envelope,
                                         qos=1, retain=True)
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError):
            break  # Stays queued for the next round, and so does everything after it (order matters).
        if not info.is_published():
            break
        sent.append(command)
    bluegreen.mark_published(sent)
    return len(sent)


def mark_for_republish(session: Session) -> int:
    """After a reconnect, queue again every manifest a device may still need (the broker may have lost it).

    That is the manifest of every device still updating in a running rollout, and the restore (or clearing)
    manifest of every device an aborted rollout sent back that has not reported on it yet.
    """
    active = select(Rollout.id).where(Rollout.state.in_([RolloutState.IN_PROGRESS.value, RolloutState.PAUSED.value]))
    rows: list[Any] = list(session.execute(select(RolloutTarget.device_id, RolloutTarget.sequence).where(
        RolloutTarget.rollout_id.in_(active), RolloutTarget.state.in_([s.value for s in IN_FLIGHT_STATES]))))
    aborted = select(Rollout.id).where(Rollout.state == RolloutState.ABORTED.value)
    rows += session.execute(select(Device.id, Device.desired_sequence).where(
        Device.desired_rollout_id.in_(aborted), Device.desired_sequence.is_not(None),
        or_(Device.reported_sequence.is_(None), Device.reported_sequence != Device.desired_sequence))).all()
    count = 0
    for device_id, sequence in {(row[0], row[1]) for row in rows}:
        result = session.execute(update(Manifest).where(Manifest.device_id == device_id,
                                                        Manifest.sequence == sequence).values(published_at=None))
        count += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return count


class FleetBridge:
    """Worker: one MQTT connection, one processing thread; handlers only enqueue."""

    name = "fleet-bridge"

    def __init__(self, database: Database, factory: ManifestFactory, *, mqtt_url: str, protocol: Protocol = "5",
                 step_seconds: float = 1.0, client_id: str | None = None,
                 auth_files: BrokerAuthFiles | None = None) -> None:
        self.database = database
        self.auth_files = auth_files
        self.factory = factory
        self.step_seconds = step_seconds
        self.stats = BridgeStats()
        self.connection = MqttConnection(mqtt_url, client_id or f"edgeloop-cp-{uuid.uuid4().hex[:8]}",
                                         protocol=protocol)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        # Messages of a batch that met a database outage: applied again before anything newer.
        self._retry: deque[tuple[str, bytes]] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-bridge", daemon=True)
        self._seen_connects = 0

    def _enqueue(self, message: mqtt.MQTTMessage) -> None:
        self._inbox.put((message.topic, bytes(message.payload)))
        self._wake.set()

    def start_sync(self) -> None:
        """Subscribe, connect in the background (the broker may come later) and start processing."""
        for kind in ("status", "presence"):
            self.connection.subscribe(fleet_filter(kind), self._enqueue, qos=1)
        self._sync_auth(force=True)  # our own user must be in the password file before we can log in
        self.connection.start(timeout=None)
        self._thread.start()

    def stop_sync(self) -> None:
        """Stop processing and disconnect."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15)
        self.connection.stop()

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def wake(self) -> None:
        """Publish newly issued manifests now instead of at the next tick."""
        self._wake.set()

    def _run(self) -> None:
        last_step = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                touched = self._drain()
                if self.connection.connect_count != self._seen_connects and self.connection.connected.is_set():
                    self._seen_connects = self.connection.connect_count
                    if self._seen_connects > 1:
                        with self.database.transaction() as session:
                            mark_for_republish(session)
                        self.stats.republish_rounds += 1
                due = time.monotonic() - last_step >= self.step_seconds
                if due:
                    last_step = time.monotonic()
                    self._sync_auth()
                    with self.database.transaction(write=False) as session:
                        touched |= set(rollouts.active_rollout_ids(session))
                for rollout_id in sorted(touched):
                    self._step(rollout_id)
                if self.connection.connected.is_set():
                    with self.database.transaction() as session:
                        self.stats.published += publish_pending(session, self.connection)
            except Exception:  # The bridge must outlive database hiccups and broker restarts.
                log.exception("fleet bridge iteration failed")
                time.sleep(0.5)

    def _sync_auth(self, *, force: bool = False) -> None:
        if self.auth_files is None:
            return
        try:
            with self.database.transaction(write=False) as session:
                self.auth_files.sync(session, force=force)
        except Exception:  # a full disk must not stop status processing; the next step tries again
            log.exception("could not write the broker's password file and ACL")

    def _step(self, rollout_id: str) -> None:
        try:
            with self.database.transaction() as session:
                rollouts.step(session, self.factory, rollout_id)
        except Exception:
            log.exception("rollout %s step failed", rollout_id)

    def _drain(self) -> set[str]:
        batch: list[tuple[str, bytes]] = []
        while self._retry and len(batch) < BATCH:
            batch.append(self._retry.popleft())
        while len(batch) < BATCH:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return set()
        self.stats.received += len(batch)
        try:
            with self.database.transaction() as session:
                return self._apply(session, batch)
        except OperationalError:
            if not self._database_up():
                self._requeue(batch)
                raise
            return self._apply_each(batch)  # the database answers: something in this batch upset it
        except Exception:
            # A duplicate from another replica (IntegrityError) or a message the database refused
            # (OverflowError, DataError): apply one by one so only the bad message is set aside.
            return self._apply_each(batch)

    def _database_up(self) -> bool:
        try:
            with self.database.transaction(write=False) as session:
                session.execute(select(1))
        except Exception:
            return False
        return True

    def _requeue(self, batch: list[tuple[str, bytes]]) -> None:
        # The database is away, not the messages' fault: keep them, in order, for the next round.
        self.stats.received -= len(batch)
        self._retry.extendleft(reversed(batch))

    def _apply_each(self, batch: list[tuple[str, bytes]]) -> set[str]:
        touched: set[str] = set()
        for index, message in enumerate(batch):
            for attempt in (1, 2):  # a second try for an operational error (a lock timeout passes)
                try:
                    with self.database.transaction() as session:
                        touched |= self._apply(session, [message])
                except IntegrityError:
                    self.stats.duplicates += 1
                except OperationalError as exc:
                    if not self._database_up():  # an outage, not this message: keep it and the rest for later
                        self._requeue(batch[index:])
                        raise
                    if attempt == 1:
                        continue
                    self._quarantine(message, exc)  # the database is up and refuses only this one
                except Exception as exc:
                    self._quarantine(message, exc)
                break
        return touched

    def _quarantine(self, message: tuple[str, bytes], exc: Exception) -> None:
        topic, payload = message
        reason = f"quarantined: {type(exc).__name__}: {exc}"[:200]
        self.stats.quarantined += 1
        self.stats.reasons[reason] += 1
        log.warning("quarantined a message on %s that the database refused: %s", topic, reason)
        try:
            with self.database.transaction() as session:
                session.execute(insert(DeviceEvent), [events.quarantine_row(topic, payload, reason)])
        except Exception:
            log.exception("could not store the quarantined message from %s", topic)

    def _apply(self, session: Session, batch: list[tuple[str, bytes]]) -> set[str]:
        touched: set[str] = set()
        for (topic, _), outcome in zip(batch, events.apply_batch(session, batch), strict=True):
            if not outcome.accepted:
                self.stats.malformed += 1
                self.stats.reasons[outcome.reason or "unknown"] += 1
                log.warning("dropped malformed message on %s: %s", topic, outcome.reason)
            elif outcome.duplicate:
                self.stats.duplicates += 1
            else:
                self.stats.applied += 1
                if outcome.rollout_id:
                    touched.add(outcome.rollout_id)
        return touched


def fleet_bridge(app: Any, settings: Settings) -> FleetBridge:
    """Build the bridge worker for an app (called by ``build_workers`` when ``mqtt_url`` is set)."""
    assert settings.mqtt_url is not None
    bridge = FleetBridge(app.state.database, factory_for(app.state), mqtt_url=client_url(settings),
                         protocol=settings.mqtt_protocol, step_seconds=settings.fleet_step_seconds,
                         auth_files=BrokerAuthFiles.from_settings(settings))
    app.state.fleet_bridge = bridge
    return bridge

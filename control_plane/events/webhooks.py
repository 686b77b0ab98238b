"""Outgoing webhooks: scan the log per subscription, sign and POST each event, retry with backoff, dead-letter.

At least once, with the event id (audit seq) in every delivery for de-duplication. Each subscription has its
own small number of requests in flight, and every request its own timeout, so an endpoint that hangs or
answers 500 forever only ever occupies its own slots: other subscriptions' deliveries go on unslowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.events import service
from control_plane.events.models import WebhookDelivery, WebhookSubscription
from control_plane.events.schemas import DeliveryState
from control_plane.settings import Settings

log = logging.getLogger(__name__)
SCAN_BATCH = 500
SIGNATURE_HEADER = "X-Edgeloop-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return ``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>.<body>")."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after ``attempts`` failures: base * 2^(attempts-1), capped."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Job:
    """One claimed delivery, with everything needed to send it outside a transaction."""

    delivery_id: int
    subscription_id: str
    event_seq: int
    url: str
    secret: str
    body: bytes


def _lock(session: Session, query: Any) -> Any:
    return query.with_for_update(skip_locked=True) if session.get_bind().dialect.name == "postgresql" else query


def enqueue_new_events(session: Session) -> int:
    """Turn log entries past each active subscription's cursor into pending deliveries; return how many."""
    created = 0
    now = utcnow()
    subscriptions = session.scalars(_lock(session, select(WebhookSubscription).where(WebhookSubscription.active)))
    for subscription in subscriptions:
        head = service.head_seq(session)
        events = service.read_events(session, after=subscription.cursor, limit=SCAN_BATCH, until=head,
                                     event_filter=service.subscription_filter(subscription))
        for event in events:
            session.add(WebhookDelivery(subscription_id=subscription.id, event_seq=event.seq,
                                        state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now))
        created += len(events)
        # Advance past non-matching entries too, but never beyond what this read could see.
        subscription.cursor = events[-1].seq if len(events) == SCAN_BATCH else max(subscription.cursor, head)
    session.flush()
    return created


def claim_due(session: Session, slots: dict[str, int], lease_seconds: float, limit: int = 200) -> list[Job]:
    """Claim due pending deliveries (a lease, so another replica skips them), at most ``slots`` per subscription."""
    now = utcnow()
    query = select(WebhookDelivery).where(WebhookDelivery.state == DeliveryState.PENDING.value,
                                          WebhookDelivery.next_attempt_at <= now)
    due = list(session.scalars(_lock(session, query.order_by(WebhookDelivery.next_attempt_at,
                                                                WebhookDelivery.id).limit(limit))))
    jobs: list[Job] = []
    taken: Counter[str] = Counter()
    subscriptions: dict[str, WebhookSubscription | None] = {}
    for delivery in due:
        if taken[delivery.subscription_id] >= slots.get(delivery.subscription_id, 0):
            continue
        if delivery.subscription_id not in subscriptions:
            subscriptions[delivery.subscription_id] = session.get(WebhookSubscription, delivery.subscription_id)
        subscription = subscriptions[delivery.subscription_id]
        if subscription is None or not subscription.active:
            continue
        events = service.read_events(session, after=delivery.event_seq - 1, limit=1, until=delivery.event_seq)
        if not events:
            delivery.state, delivery.last_error = DeliveryState.DEAD.value, "event no longer in the log"
            continue
        taken[delivery.subscription_id] += 1
        delivery.next_attempt_at = now + timedelta(seconds=lease_seconds)
        body = json.dumps(service.event_payload(events[0]), separators=(",", ":")).encode()
        jobs.append(Job(delivery.id, subscription.id, delivery.event_seq, subscription.url, subscription.secret,
                        body))
    session.flush()
    return jobs


def record_outcome(session: Session, job: Job, status: int | None, error: str | None, settings: Settings) -> str:
    """Mark a delivery delivered, or schedule its retry, or dead-letter it; return the new state."""
    delivery = session.get(WebhookDelivery, job.delivery_id)
    if delivery is None or delivery.state != DeliveryState.PENDING:
        return delivery.state if delivery else "missing"
    delivery.attempts += 1
    delivery.last_status, delivery.last_error = status, error
    now = utcnow()
    if status is not None and 200 <= status < 300:
        delivery.state, delivery.delivered_at = DeliveryState.DELIVERED.value, now
    elif delivery.attempts >= settings.webhook_max_attempts:
        delivery.state = DeliveryState.DEAD.value
    else:
        delay = backoff(delivery.attempts, settings.webhook_backoff_seconds, settings.webhook_backoff_max_seconds)
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    session.flush()
    return delivery.state


class WebhookDispatcher:
    """Scan, claim and send webhook deliveries; safe to run on every replica."""

    name = "webhooks"

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database, self.settings = database, settings
        self.in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_seconds, follow_redirects=False,
                                         limits=httpx.Limits(max_connections=500, max_keepalive_connections=50))
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._tasks]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._client is not None:
            await self._client.aclose()

    def _scan_and_claim(self, slots: dict[str, int]) -> list[Job]:
        with self.database.transaction() as session:
            enqueue_new_events(session)
        with self.database.transaction() as session:
            return claim_due(session, slots, self.settings.webhook_timeout_seconds + 5)

    def _free_slots(self) -> dict[str, int]:
        with self.database.transaction(write=False) as session:
            ids = list(session.scalars(select(WebhookSubscription.id).where(WebhookSubscription.active)))
        return {i: self.settings.webhook_concurrency - self.in_flight[i] for i in ids}

    async def run_once(self) -> int:
        """Scan the log, claim what is due and start sending it; return how many were started."""
        slots = await asyncio.to_thread(self._free_slots)
        if not slots:
            return 0
        jobs = await asyncio.to_thread(self._scan_and_claim, slots)
        for job in jobs:
            self.in_flight[job.subscription_id] += 1
            task = asyncio.create_task(self._send(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    async def _send(self, job: Job) -> None:
        assert self._client is not None
        status: int | None = None
        error: str | None = None
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Edgeloop-Event-Id": str(job.event_seq),
                   "X-Edgeloop-Delivery-Id": str(job.delivery_id), "X-Edgeloop-Timestamp": timestamp,
                   SIGNATURE_HEADER: sign(job.secret, timestamp, job.body)}
        try:
            response = await self._client.post(job.url, content=job.body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            self.in_flight[job.subscription_id] -= 1
        try:
            await asyncio.to_thread(self._record, job, status, error)
        except Exception:
            log.exception("webhook %s: recording delivery %s failed", job.subscription_id, job.delivery_id)

    def _record(self, job: Job, status: int | None, error: str | None) -> None:
        with self.database.transaction() as session:
            record_outcome(session, job, status, error, self.settings)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("webhook dispatcher step failed")
            await asyncio.sleep(self.settings.webhook_poll_seconds)

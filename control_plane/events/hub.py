"""One reader of the audit log per process, fanning new events out to every live SSE subscriber.

The hub wakes on PostgreSQL NOTIFY (a trigger on audit_entries, migration 0070) or, on SQLite, when the database
files change (a stat every few milliseconds: any process's commit writes the WAL), with a slow poll of the audit
head as the safety net either way; it then reads the log itself, so a missed wake-up costs only latency.
Subscribers whose queue overflows are marked lagging and catch up from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from control_plane.db.session import Database
from control_plane.events import service
from control_plane.events.schemas import Event
from control_plane.settings import Settings
from control_plane.workers import Worker

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "edgeloop_audit"
HUB_BATCH = 1000
CATCH_UP_BATCH = 500
QUEUE_BATCHES = 256


@dataclass(eq=False)
class Subscriber:
    """A live stream's inbox of event batches."""

    queue: asyncio.Queue[list[Event]] = field(default_factory=lambda: asyncio.Queue(QUEUE_BATCHES))
    lagged: bool = False


class EventHub:
    """Tail the audit log once per process and broadcast what is new."""

    name = "event-hub"

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.poll_seconds = settings.events_poll_seconds
        # PostgreSQL is woken by NOTIFY, a file-backed SQLite database by its files changing; the poll of the
        # audit head is then only a safety net. An in-memory SQLite database has no files: poll the head.
        self.sqlite_files = _sqlite_files(database)
        polled = database.is_sqlite and not self.sqlite_files
        self.idle_seconds = self.poll_seconds if polled else self.poll_seconds * 50
        self.stat_seconds = self.poll_seconds / 4
        self.head = 0
        self.subscribers: set[Subscriber] = set()
        self.changed = asyncio.Event()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: threading.Thread | None = None

    async def start(self) -> None:
        self.head = await asyncio.to_thread(self._read_head)
        if not self.database.is_sqlite:
            loop = asyncio.get_running_loop()
            self._listener = threading.Thread(target=self._listen, args=(loop,), name="event-hub-listen",
                                              daemon=True)
            self._listener.start()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)

    def subscribe(self) -> Subscriber:
        """Register a subscriber; it receives every batch read after this call."""
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        self.changed.set()  # an idle SQLite hub waits without watching the files; start watching now
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber."""
        self.subscribers.discard(subscriber)

    def _read_head(self) -> int:
        with self.database.transaction(write=False) as session:
            return service.head_seq(session)

    def _read_new(self, after: int) -> tuple[int, list[Event]]:
        """Return the head and, when it moved past ``after``, the events up to it (one transaction, one hop)."""
        with self.database.transaction(write=False) as session:
            head = service.head_seq(session)
            if head <= after or not self.subscribers:
                return head, []
            return head, service.read_events(session, after=after, limit=HUB_BATCH, until=head)

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg

        conninfo = make_url(self.database.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    loop.call_soon_threadsafe(self.changed.set)  # anything committed while (re)connecting
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=0.5, stop_after=1):
                            loop.call_soon_threadsafe(self.changed.set)
            except Exception:
                log.warning("event hub: LISTEN connection lost; retrying", exc_info=True)
                self._stop.wait(1.0)

    async def _wait_for_files(self, stamp: tuple[tuple[int, int], ...]) -> None:
        """Return when the SQLite files differ from ``stamp`` (a commit by any process), or after the idle poll."""
        # A stat is a few microseconds on the event loop; a head read is a thread hop and a transaction. Polling
        # the head every 20 ms cost 10 ms of latency on average and 50 reads/s while nothing happened.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.idle_seconds
        while loop.time() < deadline:
            if not self.subscribers:  # nobody to deliver to: no stat loop; subscribe() sets `changed`
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - loop.time()))
                return
            if self.changed.is_set() or _stamp(self.sqlite_files) != stamp:
                return
            await asyncio.sleep(self.stat_seconds)

    async def _run(self) -> None:
        while True:
            # Stamped before the read: a commit that lands during the read changes the files after the stamp.
            stamp = _stamp(self.sqlite_files)
            self.changed.clear()
            try:
                await self._advance()
            except Exception:
                log.exception("event hub: reading the audit log failed")
                await asyncio.sleep(self.idle_seconds)
            if self.sqlite_files:
                await self._wait_for_files(stamp)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), self.idle_seconds)

    async def _advance(self) -> None:
        # One worker-thread hop per wake-up (head and rows in one read): on busy cores each hop is a GIL
        # hand-off that every subscriber's delivery waits behind.
        while True:
            head, events = await asyncio.to_thread(self._read_new, self.head)
            if not events:
                self.head = max(self.head, head)
                return
            # A short read covered everything up to the head (same transaction): no second read to find that out.
            self.head = events[-1].seq if len(events) == HUB_BATCH else max(events[-1].seq, head)
            for subscriber in list(self.subscribers):
                try:
                    subscriber.queue.put_nowait(events)
                except asyncio.QueueFull:
                    subscriber.lagged = True
            if len(events) < HUB_BATCH:
                return


def _sqlite_files(database: Database) -> list[str]:
    """Return the files a commit to this SQLite database touches (main file and WAL); none for memory or servers."""
    if not database.is_sqlite:
        return []
    path = make_url(database.url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return []
    return [path, f"{path}-wal"]


def _stamp(paths: list[str]) -> tuple[tuple[int, int], ...]:
    """Return (mtime_ns, size) per file; a missing file reads as (0, 0)."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((0, 0))
        else:
            stamps.append((info.st_mtime_ns, info.st_size))
    return tuple(stamps)


async def stream_events(hub: EventHub, event_filter: service.EventFilter, cursor: int
                        ) -> AsyncIterator[list[Event]]:
    """Yield batches of the events after ``cursor`` that pass the filter, then live ones, exactly once, in order.

    Batches, not single events: one write per subscriber per hub read keeps the cost per delivered event low
    when many streams follow a busy log.
    """
    subscriber = hub.subscribe()  # before the catch-up read, so nothing falls between the two

    def catch_up(after: int) -> list[Event]:
        with hub.database.transaction(write=False) as session:
            return service.read_events(session, after=after, limit=CATCH_UP_BATCH, event_filter=event_filter)

    try:
        behind = True
        while True:
            if behind or subscriber.lagged:
                subscriber.lagged = False
                while subscriber.queue.qsize():
                    subscriber.queue.get_nowait()
                batch = await asyncio.to_thread(catch_up, cursor)
                if batch:
                    cursor = batch[-1].seq
                    yield batch
                behind = len(batch) == CATCH_UP_BATCH
                continue
            # Subscribed before the first catch-up read: every batch from here on starts at or below what that
            # read covered, so skipping what the cursor passed leaves no gap and no duplicate.
            events = await subscriber.queue.get()
            fresh = [event for event in events if event.seq > cursor and event_filter.accepts(event)]
            cursor = max(cursor, events[-1].seq)
            if fresh:
                yield fresh
    finally:
        hub.unsubscribe(subscriber)


def event_workers(app: Any, settings: Settings) -> list[Worker]:
    """Return the event hub (kept on app.state for the SSE route) and the webhook dispatcher."""
    from control_plane.events.webhooks import WebhookDispatcher

    hub = EventHub(app.state.database, settings)
    app.state.event_hub = hub
    return [hub, WebhookDispatcher(app.state.database, settings)]

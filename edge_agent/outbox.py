"""Bounded on-disk store-and-forward queue for telemetry windows (stdlib sqlite3).

A window row is deleted only when the control plane confirms it has settled the window (stored it, found it
a duplicate, or quarantined it for good): the consumer publishes the window_seqs of each committed batch to
`edgeloop/devices/{id}/telemetry/ack` (`confirm`). A broker PUBACK only means the broker took the message,
which a consumer that dies, or a shared subscription with nobody subscribed, can still lose: after a PUBACK
a row waits `ack_timeout_s` for its confirmation and is then sent again (the control plane deduplicates by
(device, window_seq) and confirms the duplicate). With `end_to_end=False` a PUBACK deletes the row (for a
control plane that publishes no confirmations).
When the bound is hit the oldest rows are dropped and counted; the next window reports the count.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    window_seq INTEGER NOT NULL UNIQUE,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('next_window_seq', 1), ('dropped', 0), ('dropped_total', 0);
"""
ACK_SCHEMA = "edgeloop.telemetry-ack/v1"
_MAX_ACK_SEQS = 100_000


def ack_topic(device_id: str) -> str:
    """Return the topic on which the control plane confirms this device's settled windows."""
    return f"edgeloop/devices/{device_id}/telemetry/ack"


def parse_ack(payload: bytes | bytearray) -> list[int]:
    """Return the window_seqs an `edgeloop.telemetry-ack/v1` message confirms ([] for anything else)."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    if not isinstance(document, dict) or document.get("schema") != ACK_SCHEMA:
        return []
    seqs = document.get("seqs")
    if not isinstance(seqs, list) or len(seqs) > _MAX_ACK_SEQS:
        return []
    return [seq for seq in seqs if type(seq) is int and 0 <= seq < 2**63]


@dataclass(frozen=True)
class OutboxItem:
    """One stored window waiting to be confirmed."""

    row_id: int
    window_seq: int
    payload: bytes


class Outbox:
    """A durable FIFO of encoded windows with paho-shaped publish/ack bookkeeping; thread-safe."""

    def __init__(self, path: str | Path, *, max_windows: int = 10_000, max_inflight: int = 20,
                 end_to_end: bool = True, ack_timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_windows < 1 or max_inflight < 1 or ack_timeout_s <= 0:
            raise ValueError("max_windows, max_inflight and ack_timeout_s must be positive")
        self.max_windows = max_windows
        self.max_inflight = max_inflight  # windows sent and not yet confirmed (PUBACK or end to end)
        self.end_to_end = end_to_end
        self.ack_timeout_s = ack_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        # paho calls on_publish from its network thread, so the connection is shared under the lock.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._inflight: dict[int, int] = {}  # mid -> row id; in memory: a restart resends unacked rows
        # row id -> when to send again: PUBACKed, waiting for the control plane's confirmation.
        self._awaiting: dict[int, float] = {}
        # PUBACKs that arrive while pump() is between publish() and mark_inflight(). Kept only during a
        # pump: other messages on the same client (status, presence) ack mids we never see published.
        self._early_acks: set[int] = set()
        self._pumping = False

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM outbox_meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def next_window_seq(self) -> int:
        """Allocate the next window sequence number; it survives restarts and never repeats."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._meta("next_window_seq")
            self._db.execute("UPDATE outbox_meta SET value = value + 1 WHERE key = 'next_window_seq'")
            self._db.execute("COMMIT")
            return seq

    def take_dropped(self) -> int:
        """Return windows dropped since the last call and reset the count."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            dropped = self._meta("dropped")
            self._db.execute("UPDATE outbox_meta SET value = 0 WHERE key = 'dropped'")
            self._db.execute("COMMIT")
            return dropped

    @property
    def dropped_total(self) -> int:
        """Return every window ever dropped for the bound."""
        with self._lock:
            return self._meta("dropped_total")

    def put(self, message: dict[str, Any]) -> None:
        """Store one window message (JSON-encoded), dropping the oldest rows past the bound."""
        payload = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        self.enqueue(int(message["window_seq"]), payload)

    def enqueue(self, window_seq: int, payload: bytes) -> None:
        """Store an encoded window, dropping the oldest rows past the bound."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO outbox (window_seq, payload) VALUES (?, ?)", (window_seq, payload))
            excess = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.max_windows
            if excess > 0:
                self._db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                )
                self._db.execute(
                    "UPDATE outbox_meta SET value = value + ? WHERE key IN ('dropped', 'dropped_total')",
                    (excess,),
                )
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def peek(self, limit: int = 100, *, include_inflight: bool = False) -> list[OutboxItem]:
        """Return the oldest stored windows in order (by default those not already handed to the client)."""
        with self._lock:
            return self._peek(limit, include_inflight)

    def _peek(self, limit: int, include_inflight: bool) -> list[OutboxItem]:
        now = self._clock()
        busy = set(self._inflight.values()) | {row for row, due in self._awaiting.items() if due > now}
        rows = self._db.execute(
            "SELECT id, window_seq, payload FROM outbox ORDER BY id LIMIT ?", (limit + len(busy),)
        ).fetchall()
        items = [OutboxItem(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]
        if not include_inflight:
            items = [item for item in items if item.row_id not in busy]
        return items[:limit]

    def mark_inflight(self, mid: int, row_id: int) -> None:
        """Record that `row_id` was published as message id `mid`; applies an ack that came first."""
        with self._lock:
            self._awaiting.pop(row_id, None)
            if mid in self._early_acks:
                self._early_acks.discard(mid)
                self._delivered(row_id)
            else:
                self._inflight[mid] = row_id

    def ack(self, mid: int) -> bool:
        """Note the broker's PUBACK for `mid` (call from paho's on_publish); False if unknown yet."""
        with self._lock:
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                if self._pumping:
                    self._early_acks.add(mid)
                return False
            self._delivered(row_id)
            return True

    def _delivered(self, row_id: int) -> None:
        if self.end_to_end:
            self._awaiting[row_id] = self._clock() + self.ack_timeout_s
        else:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def confirm(self, seqs: Iterable[int]) -> int:
        """Delete the windows the control plane confirmed (call from the ack topic's handler); return how many."""
        wanted = sorted(set(seqs))
        deleted = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT id FROM outbox WHERE window_seq IN ({marks})", chunk).fetchall()
                self._db.execute(f"DELETE FROM outbox WHERE window_seq IN ({marks})", chunk)
                for (row_id,) in rows:
                    self._awaiting.pop(int(row_id), None)
                deleted += len(rows)
            self._db.execute("COMMIT")
        return deleted

    def inflight(self) -> int:
        """Return how many windows are sent and not yet confirmed (by PUBACK, or end to end)."""
        with self._lock:
            return len(self._inflight) + len(self._awaiting)

    def reset_inflight(self) -> None:
        """Forget in-flight publishes (a new client/session will not retransmit them), so they resend."""
        with self._lock:
            self._inflight.clear()
            self._early_acks.clear()

    def pump(self, publish: Callable[[bytes], int | None]) -> int:
        """Publish pending windows in order up to `max_inflight`; `publish` returns paho's mid or None.

        Each row goes to the client once per session: paho itself retransmits unacknowledged QoS 1
        messages after a reconnect, so re-publishing here would duplicate them. A PUBACKed row goes again
        only when its confirmation is `ack_timeout_s` late.
        """
        sent = 0
        with self._lock:
            self._forget_settled()
            now = self._clock()
            waiting = sum(1 for due in self._awaiting.values() if due > now)
            room = self.max_inflight - len(self._inflight) - waiting
            candidates = self._peek(room, include_inflight=False) if room > 0 else []
            self._pumping = True
        try:
            for item in candidates:
                mid = publish(item.payload)
                if mid is None:
                    break
                self.mark_inflight(mid, item.row_id)
                sent += 1
        finally:
            with self._lock:
                self._pumping = False
                self._early_acks.clear()
        return sent

    def _forget_settled(self) -> None:
        """Drop waiting entries whose rows are gone (confirmed before their PUBACK arrived, or dropped)."""
        if not self._awaiting:
            return
        ids = list(self._awaiting)
        marks = ", ".join("?" * len(ids))
        present = {int(r[0]) for r in self._db.execute(f"SELECT id FROM outbox WHERE id IN ({marks})", ids)}
        for row_id in ids:
            if row_id not in present:
                del self._awaiting[row_id]

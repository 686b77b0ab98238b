"""Drive many paho clients from one thread (epoll) and share artifacts per sha256 in one process."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import resource
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
import paho.mqtt.client as mqtt

from edge_agent.inference import make_session

log = logging.getLogger(__name__)


def raise_fd_limit() -> int:
    """Raise the RLIMIT_NOFILE soft limit to the hard limit and return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SharedArtifacts:
    """Share verified artifact files and onnxruntime sessions per sha256 across simulated devices."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._session_locks: dict[str, threading.Lock] = {}
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._pending: dict[str, threading.Event] = {}
        self.wait_s = 120.0
        self.sessions_created = 0

    def stored(self, sha256: str) -> Path | None:
        """Return the shared verified copy; if another device is fetching it, wait for that first."""
        path = self.root / sha256
        with self._lock:
            if path.exists():
                return path
            pending = self._pending.get(sha256)
            if pending is None:
                # This caller becomes the one that writes the copy; it must call release().
                self._pending[sha256] = threading.Event()
                return None
        pending.wait(self.wait_s)
        return path if path.exists() else None

    def store(self, sha256: str, path: Path) -> None:
        """Hard-link a verified slot file into the shared store (slot files are replaced, never edited)."""
        target = self.root / sha256
        tmp = self.root / f".{sha256}.{threading.get_ident()}"
        try:
            os.link(path, tmp)
            os.replace(tmp, target)
        except OSError:
            log.debug("could not share %s", sha256, exc_info=True)

    def release(self, sha256: str) -> None:
        """Wake devices waiting for this artifact (stored or not)."""
        with self._lock:
            pending = self._pending.pop(sha256, None)
        if pending is not None:
            pending.set()

    def session(self, sha256: str, path: Path) -> ort.InferenceSession:
        """Return the one session for this artifact, loading it on first use."""
        with self._lock:
            lock = self._session_locks.setdefault(sha256, threading.Lock())
        with lock:
            if sha256 not in self._sessions:
                self._sessions[sha256] = make_session(path)
                self.sessions_created += 1
            return self._sessions[sha256]


class FleetLoop:
    """Drive many paho clients from one thread with an epoll selector and a timer heap."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()
        self.clients: list[mqtt.Client] = []
        self.stopping = threading.Event()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run fn on the loop thread (safe from any thread)."""
        self._calls.append(fn)
        # BlockingIOError: already awake (buffer full); OSError: shutting down.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run fn on the loop thread after delay seconds (loop thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._ids), fn))

    def attach(self, client: mqtt.Client) -> None:
        """Let the loop own client's socket through paho's external-loop callbacks."""
        def opened(c: mqtt.Client, userdata: Any, sock: Any) -> None:
            self.selector.register(sock, selectors.EVENT_READ, c)

        def closed(c: mqtt.Client, userdata: Any, sock: Any) -> None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(sock)

        def want_write(c: mqtt.Client, userdata: Any, sock: Any) -> None:
            self._modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

        def done_write(c: mqtt.Client, userdata: Any, sock: Any) -> None:
            self._modify(sock, selectors.EVENT_READ, c)

        client.on_socket_open = opened
        client.on_socket_close = closed
        client.on_socket_register_write = want_write
        client.on_socket_unregister_write = done_write
        self.clients.append(client)

    def _modify(self, sock: Any, events: int, client: mqtt.Client) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.modify(sock, events, client)

    def run(self) -> None:
        """Serve sockets, queued calls, timers and keepalives until stop() is called."""
        next_misc = time.monotonic() + 1.0
        while not self.stopping.is_set():
            now = time.monotonic()
            deadline = min(next_misc, self._timers[0][0] if self._timers else next_misc)
            for key, events in self.selector.select(max(0.0, min(deadline - now, 0.5))):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                client: mqtt.Client = key.data
                if events & selectors.EVENT_READ:
                    client.loop_read()
                if events & selectors.EVENT_WRITE:
                    client.loop_write()
            while self._calls:
                self._run(self._calls.popleft())
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._run(heapq.heappop(self._timers)[2])
            if now >= next_misc:
                for each in self.clients:
                    each.loop_misc()
                next_misc = now + 1.0

    @staticmethod
    def _run(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("fleet loop callback failed")

    def stop(self) -> None:
        """Ask run() to return."""
        self.stopping.set()
        self.call_soon(lambda: None)

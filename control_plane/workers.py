"""Background workers started and stopped with the app (checkpointer, MQTT bridge, monitors)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from control_plane.audit.checkpoints import Checkpointer, CheckpointSink
from control_plane.db.session import Database
from control_plane.signing import Signer

log = logging.getLogger(__name__)


class Worker(Protocol):
    """Something that runs for the app's lifetime."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class PeriodicWorker:
    """Run a blocking function in a thread every ``interval`` seconds; errors are logged, never fatal."""

    def __init__(self, name: str, interval: float, step: Callable[[], object], *, final_step: bool = True) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._final_step = final_step
        self._task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Future[object] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._step))
            try:
                await asyncio.shield(self._in_flight)
            except Exception:
                log.exception("worker %s step failed", self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Cancelling the task does not stop a step's thread: wait for it, so no step runs on after shutdown
        # (against a disposed database, or next to the final step below).
        if self._in_flight is not None and not self._in_flight.done():
            try:
                await self._in_flight
            except Exception:
                log.exception("worker %s step failed", self.name)
        # One last step on shutdown, so e.g. the final audit head is checkpointed.
        if self._final_step:
            try:
                await asyncio.to_thread(self._step)
            except Exception:
                log.exception("worker %s final step failed", self.name)


def audit_checkpointer(database: Database, signer: Signer, interval: float,
                       sink: CheckpointSink | None = None) -> PeriodicWorker:
    """Verify the new suffix and sign the audit head periodically (and at shutdown); publish to the sink."""
    return PeriodicWorker("audit-checkpointer", interval, Checkpointer(database, signer, sink).step)

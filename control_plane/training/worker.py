"""The training worker: claims queued jobs and runs them, one at a time per process; safe on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Any

from control_plane.db.session import Database
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.training import jobs
from control_plane.training.runner import run_claimed
from control_plane.workers import Worker

log = logging.getLogger(__name__)


class TrainingWorker:
    """Poll for claimable jobs; run each in a thread so the event loop stays free."""

    name = "training-worker"

    def __init__(self, database: Database, store: ArtifactStore, settings: Settings) -> None:
        self.database, self.store, self.settings = database, store, settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def run_once(self, job_id: str | None = None) -> str | None:
        """Claim and run one job (``job_id``, or the oldest); return its final state, None when none was claimed."""
        settings = self.settings
        if job_id is None and not jobs.has_work(self.database, settings.training_lease_seconds):
            return None
        claim = jobs.claim_next(self.database, worker_id=self.worker_id, lease_seconds=settings.training_lease_seconds,
                                max_attempts=settings.training_max_attempts, job_id=job_id)
        if claim is None:
            return None
        return run_claimed(self.database, self.store, settings, claim)

    async def _run(self) -> None:
        while True:
            try:
                state = await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("training worker step failed")
                state = None
            if state is None:
                await asyncio.sleep(self.settings.training_poll_seconds)


def training_workers(app: Any, settings: Settings) -> list[Worker]:
    """Return the training worker unless it is switched off (EDGELOOP_TRAINING_WORKER=false)."""
    if not settings.training_worker:
        return []
    return [TrainingWorker(app.state.database, app.state.artifact_store, settings)]

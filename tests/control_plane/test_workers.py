"""Periodic workers: a step's thread never outlives the app's shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

from control_plane.workers import PeriodicWorker


def test_stop_waits_for_the_step_in_flight_before_the_final_step() -> None:
    started, running = threading.Event(), threading.Lock()
    steps: list[str] = []

    def step() -> None:
        if not running.acquire(blocking=False):  # the cancelled step's thread is still in here
            steps.append("overlap")
            return
        try:
            started.set()
            time.sleep(0.3)
            steps.append("done")
        finally:
            running.release()

    async def scenario() -> None:
        worker = PeriodicWorker("probe", 0.01, step)
        await worker.start()
        while not started.is_set():
            await asyncio.sleep(0.01)
        await worker.stop()

    asyncio.run(scenario())
    assert steps == ["done", "done"]  # the step that was running, then the final one; nothing after stop()

"""Shadow evaluation: run a staged candidate on a sample of live inputs, never answering with it.

The candidate is the model staged in the inactive slot (verified and self-tested like any update). Sampled
batches go through a bounded queue to one background thread, so a caller never waits for the candidate and
a slow candidate costs dropped samples, not latency. Per window the device keeps only a sketch: agreement
with the active model, the candidate's label distribution, a latency histogram, errors and drops; no inputs.
A candidate that errors or exceeds its latency budget is stopped and reported; the active model keeps serving.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.inference import ModelRuntime

log = logging.getLogger(__name__)
SHADOW_SCHEMA = "edgeloop.shadow/v1"
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)
MIN_SAMPLES_TO_JUDGE = 20
GROUP = 16
MAX_ERROR_RATE = 0.1


class ShadowRunner:
    """Run one candidate runtime beside the active model on sampled batches, in its own thread."""

    def __init__(self, runtime: ModelRuntime, *, sample_rate: float, max_latency_ms: float,
                 on_stop: Callable[[str, dict[str, Any]], None] | None = None, queue_size: int = 64,
                 seed: int | None = None) -> None:
        self.runtime = runtime
        self.sample_rate = sample_rate
        self.max_latency_ms = max_latency_ms
        self.on_stop = on_stop
        self._random = random.Random(seed)
        self._queue: queue.Queue[list[tuple[np.ndarray, np.ndarray]] | None] = queue.Queue(queue_size)
        # Sampled batches collect here and go to the worker GROUP at a time (or on its 1 s tick): one wake-up and
        # one session call per group instead of per sample.
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_lock = threading.Lock()
        self._lock = threading.Lock()
        self.stopped: str | None = None
        self._reset()
        self._thread = threading.Thread(target=self._work, name="edge-shadow", daemon=True)
        self._thread.start()

    def _reset(self) -> None:
        self.started_at = time.time()
        self.rows = self.agree = self.batches = self.samples = self.errors = self.dropped = 0
        self.labels: Counter[str] = Counter()
        self.latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.over_budget = 0

    def offer(self, batch: np.ndarray, labels: np.ndarray) -> None:
        """Maybe queue a served batch for the candidate (caller's thread; never blocks, never raises)."""
        if self.stopped is not None or self._random.random() >= self.sample_rate:
            return
        with self._pending_lock:
            self._pending.append((batch, labels))
            full = len(self._pending) >= GROUP
        if full:
            self._hand_over()

    def _hand_over(self) -> None:
        with self._pending_lock:
            group, self._pending = self._pending, []
        if not group:
            return
        try:
            self._queue.put_nowait(group)
        except queue.Full:
            with self._lock:
                self.dropped += len(group)  # The budget: a candidate that cannot keep up loses samples, not latency.

    def _work(self) -> None:
        while self.stopped is None:
            try:
                items = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._hand_over()  # Quiet traffic: a partial group waits at most about a second.
                continue
            if items is None:
                return
            try:
                if len({b.shape[1:] for b, _ in items}) == 1:
                    self._run(np.concatenate([b for b, _ in items]), np.concatenate([a for _, a in items]))
                else:
                    for batch, active in items:
                        self._run(batch, active)
            finally:
                self._queue.task_done()

    def _run(self, batch: np.ndarray, active: np.ndarray) -> None:
        started = time.perf_counter()
        try:
            labels, _ = self.runtime.run(batch)
            error = False
        except Exception:
            log.debug("shadow candidate raised", exc_info=True)
            labels, error = None, True
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._record(active, labels, elapsed_ms, error)

    def _record(self, active: np.ndarray, labels: np.ndarray | None, elapsed_ms: float, error: bool) -> None:
        with self._lock:
            self.batches += 1
            self.samples += len(active)
            if error or labels is None:
                self.errors += len(active)
            else:
                candidate = labels.tolist()
                self.rows += len(candidate)
                # Compare as text: a ZipMap model may label with strings where the other has integers.
                self.agree += sum(str(a) == str(b) for a, b in zip(candidate, active.tolist(), strict=False))
                self.labels.update(str(v) for v in candidate)
            per_row = elapsed_ms / max(1, len(active))
            self.latency[bisect.bisect_left(LATENCY_BUCKETS_MS, per_row)] += len(active)
            self.over_budget += len(active) if per_row > self.max_latency_ms else 0
            verdict = self._verdict()
        if verdict is not None:
            self.stop(verdict)

    def _verdict(self) -> str | None:
        if self.samples < MIN_SAMPLES_TO_JUDGE:
            return None
        if self.errors / self.samples > MAX_ERROR_RATE:
            return "shadow_errors"
        if self.over_budget > 0.05 * self.samples:  # p95 (per row, in the shadow's batches) above the budget
            return "shadow_too_slow"
        return None

    def flush(self, timeout_s: float = 5.0) -> None:
        """Hand over the partial group and wait until the worker has scored everything queued (tests, benchmarks)."""
        self._hand_over()
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.002)

    def window(self, reset: bool = True) -> dict[str, Any]:
        """Return this window's sketch (and start a new window)."""
        with self._lock:
            sketch = {
                "schema": SHADOW_SCHEMA, "model": self.runtime.info.get("model"),
                "rollout_id": self.runtime.info.get("rollout_id"), "window_start": self.started_at,
                "window_end": time.time(), "sample_rate": self.sample_rate,
                "batches": self.batches, "samples": self.samples,
                "rows": self.rows, "agree": self.agree,
                "agreement": self.agree / self.rows if self.rows else None,
                "candidate_labels": dict(self.labels), "latency_buckets_ms": list(LATENCY_BUCKETS_MS),
                "latency_counts": list(self.latency), "errors": self.errors, "dropped": self.dropped,
                "stopped": self.stopped,
            }
            if reset:
                self._reset()
        return sketch

    def stop(self, reason: str = "stopped") -> None:
        """Stop shadowing (idempotent); report why unless it was simply ended."""
        with self._lock:
            if self.stopped is not None:
                return
            self.stopped = reason
        with contextlib.suppress(queue.Full):  # A full queue: the worker sees `stopped` within a second.
            self._queue.put_nowait(None)
        if reason != "stopped" and self.on_stop is not None:
            log.warning("shadow candidate stopped: %s", reason)
            self.on_stop(reason, self.window(reset=False))

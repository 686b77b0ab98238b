"""Shadow evaluation: run a staged candidate on a sample of live inputs, never answering with it.

The candidate is the model staged in the inactive slot (verified and self-tested like any update). Sampled
batches go through a bounded queue to one background thread, so a caller never waits for the candidate and
a slow candidate costs dropped samples, not latency. Per window the device keeps only a sketch: agreement
with the active model (or, for a regressor, an absolute-error histogram), the candidate's label distribution,
latency histograms of both models on the sampled rows, errors and drops; no inputs. A candidate that errors or
exceeds its latency budget is stopped and reported; the active model keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
# Regressors: |candidate - active| histogram upper bounds; a row "agrees" within 1% of max(1, |active|).
ERROR_BUCKETS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
REGRESSION_TOLERANCE = 0.01
MAX_LABELS = 64  # distinct candidate labels kept per window; the rest are counted under OTHER_LABEL
OTHER_LABEL = "__other__"
MAX_DENSE_LABEL = 4096
MIN_SAMPLES_TO_JUDGE = 20
GROUP = 128
MAX_ERROR_RATE = 0.1
_LATENCY_EDGES_MS = np.asarray(LATENCY_BUCKETS_MS)
_ERROR_EDGES = np.asarray(ERROR_BUCKETS)
Item = tuple[np.ndarray, np.ndarray, float]


class ShadowRunner:
    """Run one candidate runtime beside the active model on sampled batches, in its own thread."""

    def __init__(self, runtime: ModelRuntime, *, sample_rate: float, max_latency_ms: float,
                 on_stop: Callable[[str, dict[str, Any]], None] | None = None, queue_size: int = 16,
                 seed: int | None = None) -> None:
        self.runtime = runtime
        self.sample_rate = sample_rate
        self.max_latency_ms = max_latency_ms
        self.on_stop = on_stop
        self._random = random.Random(seed).random
        # Calls left until the next sample: a geometric skip is the same Bernoulli(sample_rate) sampling as a coin
        # per call, but the serving thread only decrements a counter (InferenceEngine.predict) between samples.
        self.countdown = self._skip()
        # Memory is bounded too: at most queue_size groups of GROUP sampled batches wait (references, not copies).
        self._queue: queue.Queue[list[Item] | None] = queue.Queue(queue_size)
        # Sampled batches collect here and go to the worker GROUP at a time (or on its 1 s tick): one wake-up and
        # one session call per group instead of per sample. list.append is atomic under the GIL, so the
        # caller's thread takes no lock; the swap in _hand_over is one atomic rebinding too.
        self._pending: list[Item] = []
        self._lock = threading.Lock()
        self.stopped: str | None = None
        self.final: dict[str, Any] | None = None  # the last window of a stopped runner, for the next telemetry
        self._reset()
        self._thread = threading.Thread(target=self._work, name="edge-shadow", daemon=True)
        self._thread.start()

    def _reset(self) -> None:
        self.started_at = time.time()
        self.rows = self.agree = self.batches = self.samples = self.errors = self.dropped = 0
        self.kind: str | None = None  # "classification" or "regression", from the active model's outputs
        self.labels: Counter[str] = Counter()
        self.dense_labels = np.zeros(0, dtype=np.int64)  # counts of integer labels 0..MAX_DENSE_LABEL-1
        self.latency = np.zeros(len(LATENCY_BUCKETS_MS) + 1, dtype=np.int64)
        self.active_latency = np.zeros(len(LATENCY_BUCKETS_MS) + 1, dtype=np.int64)
        self.error_counts = np.zeros(len(ERROR_BUCKETS) + 1, dtype=np.int64)
        self.over_budget = 0

    def _skip(self) -> int:
        if self.sample_rate >= 1.0:
            return 1
        return 1 + int(math.log(1.0 - self._random()) / math.log(1.0 - self.sample_rate))

    def sample(self, batch: np.ndarray, labels: np.ndarray, latency_s: float = 0.0) -> None:
        """Count one served call down and queue it when its turn comes (caller's thread; never blocks)."""
        self.countdown -= 1
        if self.countdown <= 0:
            self.offer(batch, labels, latency_s)

    def offer(self, batch: np.ndarray, labels: np.ndarray, latency_s: float = 0.0) -> None:
        """Queue a sampled batch for the candidate and draw the next skip (caller's thread; never blocks, raises)."""
        self.countdown = self._skip()
        if self.stopped is not None:
            return
        pending = self._pending
        pending.append((batch, labels, latency_s))
        if len(pending) >= GROUP:
            self._hand_over()

    def _hand_over(self) -> None:
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
                self._run_group(items)
            except Exception:  # the shadow thread must outlive any one bad group
                log.exception("shadow bookkeeping failed")
            finally:
                self._queue.task_done()

    def _run_group(self, items: list[Item]) -> None:
        batches, actives, latencies = zip(*items, strict=True)
        try:
            batch = np.concatenate(batches)
        except ValueError:  # rows of different widths cannot share one session call: score them one by one
            for item in items:
                self._run_group([item])
            return
        sizes = None if len(batch) == len(items) else np.array([len(b) for b in batches], dtype=np.float64)
        self._run(batch, np.concatenate(actives), latencies, sizes)

    def _run(self, batch: np.ndarray, active: np.ndarray, latencies: tuple[float, ...],
             weights: np.ndarray | None) -> None:
        # Each call's active latency per row, weighted by its rows: both histograms count rows.
        active_ms = np.array(latencies) * 1000.0
        if weights is not None:
            active_ms /= np.maximum(weights, 1.0)
        started = time.perf_counter()
        try:
            labels, _ = self.runtime.run(batch)
        except Exception:
            log.debug("shadow candidate raised", exc_info=True)
            labels = None
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._record(active, labels, elapsed_ms, active_ms, weights)

    def _compare(self, active: np.ndarray, candidate: np.ndarray) -> tuple[int, np.ndarray | None]:
        """Return (rows that agree, absolute-error histogram for regressors or None)."""
        if active.dtype.kind == "f" and candidate.dtype.kind == "f":
            reference = active.astype(np.float64).reshape(len(active), -1)[:, 0]
            error = np.abs(candidate.astype(np.float64).reshape(len(candidate), -1)[:, 0] - reference)
            error = np.where(np.isfinite(error), error, np.inf)
            agree = int(np.count_nonzero(error <= REGRESSION_TOLERANCE * np.maximum(1.0, np.abs(reference))))
            return agree, np.bincount(np.searchsorted(_ERROR_EDGES, error), minlength=_ERROR_EDGES.size + 1)
        if active.dtype.kind != candidate.dtype.kind or active.dtype.kind in "OUS":
            # A ZipMap model may label with strings where the other has integers: compare as text.
            active, candidate = active.astype(str), candidate.astype(str)
        return int(np.count_nonzero(active == candidate)), None

    def _record(self, active: np.ndarray, labels: np.ndarray | None, elapsed_ms: float,
                active_ms: np.ndarray, weights: np.ndarray | None = None) -> None:
        count = len(active)
        per_row = elapsed_ms / max(1, count)
        agree, errors_hist, dense, values, counts = 0, None, None, None, None
        if labels is not None and len(labels) == count:
            agree, errors_hist = self._compare(active, labels)
            if errors_hist is None and labels.dtype.kind in "iu" and int(labels.min(initial=0)) >= 0 \
                    and int(labels.max(initial=0)) < MAX_DENSE_LABEL:
                dense = np.bincount(labels)  # small integer classes: one bincount, no sort, no Python loop
            elif errors_hist is None:
                values, counts = np.unique(labels, return_counts=True)
        active_hist = np.bincount(np.searchsorted(_LATENCY_EDGES_MS, active_ms), weights=weights,
                                  minlength=self.latency.size).astype(np.int64)
        bucket = int(np.searchsorted(_LATENCY_EDGES_MS, per_row))
        with self._lock:
            self.batches += 1
            self.samples += count
            self.active_latency += active_hist
            self.latency[bucket] += count
            self.over_budget += count if per_row > self.max_latency_ms else 0
            if labels is None or len(labels) != count:
                self.errors += count
            else:
                self.rows += count
                self.agree += agree
                if errors_hist is not None:
                    self.kind = "regression"
                    self.error_counts += errors_hist
                elif dense is not None:
                    self.kind = self.kind or "classification"
                    if dense.size > self.dense_labels.size:
                        self.dense_labels = np.pad(self.dense_labels, (0, dense.size - self.dense_labels.size))
                    self.dense_labels[:dense.size] += dense
                elif values is not None and counts is not None:
                    self.kind = self.kind or "classification"
                    for value, n in zip(values.tolist(), counts.tolist(), strict=True):
                        key = str(value)
                        if key not in self.labels and len(self.labels) >= MAX_LABELS:
                            key = OTHER_LABEL  # bounded: a regressor mislabelled as classes cannot blow the sketch up
                        self.labels[key] += n
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
        info = self.runtime.info
        found = info.get("model")
        model: dict[str, Any] = found if isinstance(found, dict) else {}
        with self._lock:
            sketch = {
                "schema": SHADOW_SCHEMA, "model": info.get("model"), "rollout_id": info.get("rollout_id"),
                "candidate": {"name": model.get("name"), "version": model.get("version"),
                              "sha256": info.get("sha256")},
                "kind": self.kind, "window_start": self.started_at, "window_end": time.time(),
                "sample_rate": self.sample_rate, "max_latency_ms": self.max_latency_ms,
                "batches": self.batches, "samples": self.samples, "rows": self.rows, "agree": self.agree,
                "agreement": self.agree / self.rows if self.rows else None,
                "candidate_labels": self._label_counts(), "latency_buckets_ms": list(LATENCY_BUCKETS_MS),
                "latency_counts": self.latency.tolist(), "active_latency_counts": self.active_latency.tolist(),
                "error_buckets": list(ERROR_BUCKETS) if self.kind == "regression" else None,
                "error_counts": self.error_counts.tolist() if self.kind == "regression" else None,
                "errors": self.errors, "dropped": self.dropped, "stopped": self.stopped,
            }
            if reset:
                self._reset()
        return sketch

    def _label_counts(self) -> dict[str, int]:
        labels = Counter(self.labels)
        for value in np.flatnonzero(self.dense_labels).tolist():
            key = str(value) if str(value) in labels or len(labels) < MAX_LABELS else OTHER_LABEL
            labels[key] += int(self.dense_labels[value])
        return dict(labels)

    def stop(self, reason: str = "stopped") -> None:
        """Stop shadowing (idempotent); report why unless it was simply ended."""
        with self._lock:
            if self.stopped is not None:
                return
            self.stopped = reason
        with contextlib.suppress(queue.Full):  # A full queue: the worker sees `stopped` within a second.
            self._queue.put_nowait(None)
        if reason != "stopped":
            log.warning("shadow candidate stopped: %s", reason)
            self.final = self.window()
            if self.on_stop is not None:
                self.on_stop(reason, self.final)

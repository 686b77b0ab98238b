"""Run the active ONNX model: thread-safe predict, model swaps, self-test and the telemetry seam."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from edge_agent.manifest import SelfTest

log = logging.getLogger(__name__)


@runtime_checkable
class TelemetryRecorder(Protocol):
    """Receives every prediction; the telemetry engineer provides the real implementation."""

    def observe(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        scores: np.ndarray | None,
        latency_s: float,
        error: bool,
    ) -> None:
        """Record one predict call (called on the caller's thread; must be cheap and not raise)."""


class NullRecorder:
    """Drop all observations (the default until a real recorder is plugged in)."""

    def observe(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        scores: np.ndarray | None,
        latency_s: float,
        error: bool,
    ) -> None:
        """Ignore the observation."""


class NoModelLoaded(RuntimeError):
    """predict was called before any model was activated."""


_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32}


def make_session(path_or_bytes: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """Create a CPU onnxruntime session sized for a small device."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def decode_outputs(outputs: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Turn classifier outputs into (labels, scores), accepting ZipMap dict lists or plain tensors."""
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None
    for value in outputs:
        if isinstance(value, list):
            # skl2onnx's ZipMap: one {class: probability} dict per row.
            if value and isinstance(value[0], dict):
                keys = sorted(value[0])
                scores = np.asarray([[row[k] for k in keys] for row in value], dtype=np.float32)
            continue
        array = np.asarray(value)
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1 and array.dtype.kind in "iuUSO"):
            if labels is None:
                labels = array.reshape(-1)
        elif array.ndim == 2 and scores is None:
            scores = array.astype(np.float32, copy=False)
    if labels is None:
        if scores is None:
            raise ValueError("model has neither a label nor a score output")
        labels = np.argmax(scores, axis=1)
    return labels, scores


@dataclass
class ModelRuntime:
    """A loaded session plus the metadata of the model it runs."""

    session: ort.InferenceSession
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        declared = (self.info.get("input_schema") or {}).get("dtype")
        onnx_type = first.type.removeprefix("tensor(").removesuffix(")")
        self.dtype = _DTYPES.get(declared or onnx_type, np.float32)

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Run a batch through the session."""
        batch = np.asarray(inputs, dtype=self.dtype)
        if batch.ndim == 1:
            batch = batch.reshape(1, -1)
        return decode_outputs(self.session.run(None, {self.input_name: batch}))


class InferenceEngine:
    """Serve predictions from whichever model is active; swaps are atomic for callers."""

    def __init__(self, recorder: TelemetryRecorder | None = None) -> None:
        self._lock = threading.Lock()
        self._runtime: ModelRuntime | None = None
        self.recorder: TelemetryRecorder = recorder or NullRecorder()
        self.shadow: Any = None  # edge_agent.shadow.ShadowRunner while a staged candidate is shadowed
        self.shadow_final: dict[str, Any] | None = None  # a stopped shadow's last window, not yet sent

    @property
    def runtime(self) -> ModelRuntime | None:
        """Return the runtime serving now."""
        with self._lock:
            return self._runtime

    def swap(self, runtime: ModelRuntime | None) -> ModelRuntime | None:
        """Install runtime and return the previous one; in-flight calls finish on the old session."""
        with self._lock:
            previous, self._runtime = self._runtime, runtime
        return previous

    def set_recorder(self, recorder: TelemetryRecorder) -> None:
        """Plug in a telemetry recorder."""
        self.recorder = recorder

    def predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (labels, scores) for a batch (or one row) from the active model."""
        runtime = self.runtime
        if runtime is None:
            raise NoModelLoaded("no model is active on this device")
        batch = np.asarray(inputs, dtype=runtime.dtype)
        if batch.ndim == 1:
            batch = batch.reshape(1, -1)
        started = time.perf_counter()
        try:
            labels, scores = runtime.run(batch)
        except Exception:
            self._observe(batch, np.empty(0), None, time.perf_counter() - started, True)
            raise
        elapsed = time.perf_counter() - started
        self._observe(batch, labels, scores, elapsed, False)
        shadow = self.shadow
        if shadow is not None:
            # Inline countdown (ShadowRunner.sample): unsampled calls cost one decrement, not a method call.
            shadow.countdown -= 1
            if shadow.countdown <= 0:
                shadow.offer(batch, labels, elapsed)  # Queued; the candidate never answers the caller.
        return labels, scores

    def take_shadow_sketch(self) -> dict[str, Any] | None:
        """Return the running shadow's window sketch (starting a new one), or a stopped shadow's last one, once."""
        shadow = self.shadow
        if shadow is not None:
            sketch: dict[str, Any] = shadow.window()
            return sketch
        final, self.shadow_final = self.shadow_final, None
        return final

    def _observe(
        self, batch: np.ndarray, labels: np.ndarray, scores: np.ndarray | None, latency: float, error: bool
    ) -> None:
        try:
            self.recorder.observe(batch, labels, scores, latency, error)
        except Exception:
            # Telemetry must never take inference down.
            log.exception("telemetry recorder failed")


@dataclass(frozen=True)
class SelfTestResult:
    """Outcome of a self-test; reason is a protocol reason code when ok is False."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    latency_p50_ms: float | None = None


def run_self_test(runtime: ModelRuntime, test: SelfTest, min_timed_runs: int = 7) -> SelfTestResult:
    """Check expected labels exactly, scores within tolerance, then single-row p50 latency."""
    try:
        labels, scores = runtime.run(np.asarray(test.inputs))
    except Exception as exc:
        return SelfTestResult(False, "self_test_failed", f"model raised: {exc}")
    got = [str(v) for v in labels.tolist()]
    want = [str(v) for v in test.expected_labels]
    if got != want:
        return SelfTestResult(False, "self_test_failed", f"labels {got[:8]} != expected {want[:8]}")
    if test.expected_scores is not None:
        expected = np.asarray(test.expected_scores, dtype=np.float64)
        if scores is None or scores.shape != expected.shape:
            return SelfTestResult(False, "self_test_failed", "score shape differs from expected_scores")
        worst = float(np.max(np.abs(scores.astype(np.float64) - expected)))
        if not worst <= test.tolerance:  # written so that a NaN on either side fails the test
            return SelfTestResult(False, "self_test_failed", f"score off by {worst:.3g} > {test.tolerance}")
    rows = [np.asarray([row]) for row in test.inputs]
    runtime.run(rows[0])  # Warm-up: the first run allocates and would skew the median.
    timings: list[float] = []
    while len(timings) < max(min_timed_runs, len(rows)):
        row = rows[len(timings) % len(rows)]
        started = time.perf_counter()
        runtime.run(row)
        timings.append((time.perf_counter() - started) * 1000.0)
    p50 = float(np.median(timings))
    if p50 > test.max_latency_ms:
        return SelfTestResult(False, "latency_exceeded", f"p50 {p50:.3f} ms > {test.max_latency_ms} ms", p50)
    return SelfTestResult(True, latency_p50_ms=p50)

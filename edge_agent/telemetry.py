"""Window telemetry on the device: bin inputs and outputs against the manifest's baseline, roll windows.

Only counts leave the device: no raw feature value, label or score is ever put in a message.
Stdlib + numpy only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

TELEMETRY_SCHEMA = "edgeloop.telemetry/v1"
BASELINE_SCHEMA = "edgeloop.baseline/v1"
# Upper bounds (ms) of the fixed latency buckets; one more bucket catches everything slower.
_BROADCAST_LIMIT = 250_000  # rows x padded edges below which bins come from one broadcast comparison
LATENCY_BUCKETS_MS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class TelemetrySink(Protocol):
    """Where closed windows go (the outbox); it also numbers windows and reports drops."""

    def next_window_seq(self) -> int:
        """Return the next per-device window sequence number, durably."""
        ...

    def take_dropped(self) -> int:
        """Return windows dropped since the last call, resetting the count."""
        ...

    def put(self, message: dict[str, Any]) -> None:
        """Store one closed window message."""
        ...


class MemorySink:
    """A TelemetrySink that keeps closed windows in a list (simulators, benchmarks, scenario builders)."""

    def __init__(self, start_seq: int = 0) -> None:
        self.messages: list[dict[str, Any]] = []
        self.seq = start_seq

    def next_window_seq(self) -> int:
        """Number windows 1, 2, ... after ``start_seq``."""
        self.seq += 1
        return self.seq

    def take_dropped(self) -> int:
        """Return 0: nothing is ever dropped from memory."""
        return 0

    def put(self, message: dict[str, Any]) -> None:
        """Keep the window."""
        self.messages.append(message)


@dataclass(frozen=True)
class EdgeBaseline:
    """The parts of a baseline document the device needs for binning."""

    baseline_id: str
    numeric_index: np.ndarray  # input column of each numeric feature
    numeric_edges: list[np.ndarray]
    numeric_min: np.ndarray
    numeric_max: np.ndarray
    categorical_index: np.ndarray
    categorical_values: list[np.ndarray]  # sorted vocabularies
    output_kind: str | None
    output_values: np.ndarray  # sorted class labels, or score edges
    confidence_edges: np.ndarray

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> EdgeBaseline:
        """Parse the manifest's `baseline` field."""
        if document.get("schema") != BASELINE_SCHEMA or not document.get("baseline_id"):
            raise ValueError("not an edgeloop.baseline/v1 document")
        numeric = document["numeric"]
        categorical = document["categorical"]
        output = document.get("output") or {}
        kind = output.get("kind")
        return cls(
            baseline_id=str(document["baseline_id"]),
            numeric_index=np.array([f["index"] for f in numeric], dtype=np.int64),
            numeric_edges=[np.asarray(f["edges"], dtype=np.float64) for f in numeric],
            numeric_min=np.array([f["min"] for f in numeric], dtype=np.float64),
            numeric_max=np.array([f["max"] for f in numeric], dtype=np.float64),
            categorical_index=np.array([f["index"] for f in categorical], dtype=np.int64),
            categorical_values=[np.asarray(f["values"], dtype=np.float64) for f in categorical],
            output_kind=kind,
            output_values=np.asarray(output.get("values" if kind == "classes" else "edges", []), dtype=np.float64),
            confidence_edges=np.asarray(output.get("confidence_edges", []), dtype=np.float64),
        )

    @property
    def bin_offsets(self) -> np.ndarray:
        """Return offsets of each numeric feature's bins in the flat concatenation."""
        return np.concatenate([[0], np.cumsum([e.size + 1 for e in self.numeric_edges])]).astype(np.int64)

    @property
    def vocab_offsets(self) -> np.ndarray:
        """Return offsets of each categorical vocabulary in the flat concatenation."""
        return np.concatenate([[0], np.cumsum([v.size for v in self.categorical_values])]).astype(np.int64)


def _sparse(counts: np.ndarray) -> list[list[int]]:
    index = np.flatnonzero(counts)
    return [index.tolist(), counts[index].tolist()]


class _Counters:
    """Dense counters of one open window."""

    def __init__(self, baseline: EdgeBaseline) -> None:
        n_num, n_cat = baseline.numeric_index.size, baseline.categorical_index.size
        self.bins = np.zeros(int(baseline.bin_offsets[-1]), dtype=np.int64)
        self.cats = np.zeros(int(baseline.vocab_offsets[-1]), dtype=np.int64)
        self.unseen = np.zeros(n_cat, dtype=np.int64)
        self.nan = np.zeros(n_num + n_cat, dtype=np.int64)
        self.inf = np.zeros(n_num + n_cat, dtype=np.int64)
        self.below_min = np.zeros(n_num, dtype=np.int64)
        self.above_max = np.zeros(n_num, dtype=np.int64)
        n_out = baseline.output_values.size + (1 if baseline.output_kind == "score" else 0)
        self.output = np.zeros(n_out if baseline.output_kind else 0, dtype=np.int64)
        self.confidence = np.zeros(
            baseline.confidence_edges.size + 1 if baseline.confidence_edges.size else 0, dtype=np.int64
        )
        self.latency = np.zeros(len(LATENCY_BUCKETS_MS) + 1, dtype=np.int64)
        self.n = self.calls = self.errors = self.output_unseen = 0


class WindowRecorder:
    """Count what the model sees and says per time window; hand each closed window to a sink."""

    def __init__(
        self,
        baseline: Mapping[str, Any] | EdgeBaseline,
        *,
        device_id: str,
        model_name: str,
        model_version: int,
        sink: TelemetrySink,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        emit_empty: bool = False,
        shadow: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.baseline = baseline if isinstance(baseline, EdgeBaseline) else EdgeBaseline.from_dict(baseline)
        self.device_id = device_id
        self.model_name = model_name
        self.model_version = model_version
        self.sink = sink
        self.window_seconds = float(window_seconds)
        self.clock = clock
        self.emit_empty = emit_empty
        self.shadow = shadow  # returns the shadow candidate's window sketch (edge_agent.shadow), if one runs
        self._lock = threading.Lock()
        self._latency_edges = np.asarray(LATENCY_BUCKETS_MS, dtype=np.float64) / 1000.0
        self._start = clock()
        self._counters = _Counters(self.baseline)
        self._bin_offsets = self.baseline.bin_offsets
        self._vocab_offsets = self.baseline.vocab_offsets
        width = max((e.size for e in self.baseline.numeric_edges), default=0)
        self._edge_matrix = np.full((len(self.baseline.numeric_edges), width), np.inf)
        for k, edges in enumerate(self.baseline.numeric_edges):
            self._edge_matrix[k, : edges.size] = edges

    def observe(
        self, inputs: np.ndarray, labels: np.ndarray, scores: np.ndarray | None, latency_s: float, error: bool
    ) -> None:
        """Count one inference call of a batch (rows x features); roll the window first if it is due."""
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        self.tick()
        with self._lock:
            c = self._counters
            c.n += x.shape[0]
            c.calls += 1
            c.errors += int(bool(error))
            c.latency[np.searchsorted(self._latency_edges, latency_s, side="left")] += 1
            self._count_numeric(c, x)
            self._count_categorical(c, x)
            if labels is not None and np.size(labels) and self.baseline.output_kind:
                self._count_output(c, np.asarray(labels, dtype=np.float64).reshape(-1), scores)

    def _count_numeric(self, c: _Counters, x: np.ndarray) -> None:
        b = self.baseline
        if not b.numeric_index.size:
            return
        block = x[:, b.numeric_index]
        finite = np.isfinite(block)
        n_num = b.numeric_index.size
        c.nan[:n_num] += np.isnan(block).sum(axis=0)
        c.inf[:n_num] += np.isinf(block).sum(axis=0)
        c.below_min += (finite & (block < b.numeric_min)).sum(axis=0)
        c.above_max += (finite & (block > b.numeric_max)).sum(axis=0)
        offsets = self._bin_offsets
        if block.shape[0] * self._edge_matrix.size <= _BROADCAST_LIMIT:
            # Small batches (the common single-request case): one broadcast comparison against the padded
            # edge matrix beats a Python loop of searchsorted calls. Counts edges <= x, i.e. side="right".
            with np.errstate(invalid="ignore"):
                index = (block[:, :, None] >= self._edge_matrix[None, :, :]).sum(axis=2)
            flat = (index + offsets[:-1])[finite]
        else:
            flat = np.concatenate(
                [
                    np.searchsorted(edges, block[finite[:, k], k], side="right") + offsets[k]
                    for k, edges in enumerate(b.numeric_edges)
                ]
            )
        c.bins += np.bincount(flat, minlength=c.bins.size)

    def _count_categorical(self, c: _Counters, x: np.ndarray) -> None:
        b = self.baseline
        if not b.categorical_index.size:
            return
        n_num = b.numeric_index.size
        offsets = self._vocab_offsets
        for k, (column_index, vocabulary) in enumerate(zip(b.categorical_index, b.categorical_values, strict=True)):
            column = x[:, column_index]
            finite = np.isfinite(column)
            c.nan[n_num + k] += int(np.isnan(column).sum())
            c.inf[n_num + k] += int(np.isinf(column).sum())
            values = column[finite]
            position = np.minimum(np.searchsorted(vocabulary, values), max(vocabulary.size - 1, 0))
            known = vocabulary[position] == values if vocabulary.size else np.zeros(values.size, dtype=bool)
            c.unseen[k] += int((~known).sum())
            c.cats[offsets[k] : offsets[k + 1]] += np.bincount(position[known], minlength=vocabulary.size)

    def _count_output(self, c: _Counters, labels: np.ndarray, scores: np.ndarray | None) -> None:
        b = self.baseline
        if b.output_kind == "classes":
            position = np.minimum(np.searchsorted(b.output_values, labels), max(b.output_values.size - 1, 0))
            known = b.output_values[position] == labels
            c.output += np.bincount(position[known], minlength=c.output.size)
            c.output_unseen += int((~known).sum())
            if scores is not None and c.confidence.size:
                s = np.asarray(scores, dtype=np.float64)
                top = s.max(axis=1) if s.ndim == 2 else s.reshape(-1)
                top = top[np.isfinite(top)]
                c.confidence += np.bincount(
                    np.searchsorted(b.confidence_edges, top, side="right"), minlength=c.confidence.size
                )
            return
        values = np.asarray(scores if scores is not None else labels, dtype=np.float64).reshape(-1)
        finite = np.isfinite(values)
        c.output += np.bincount(np.searchsorted(b.output_values, values[finite], side="right"), minlength=c.output.size)
        c.output_unseen += int((~finite).sum())

    def tick(self, now: float | None = None) -> dict[str, Any] | None:
        """Close the window if its time is up; return the message handed to the sink, if any."""
        now = self.clock() if now is None else now
        with self._lock:
            if now < self._start + self.window_seconds:
                return None
            return self._close(now)

    def close_window(self, now: float | None = None) -> dict[str, Any] | None:
        """Close the open window now (e.g. at shutdown or model switch)."""
        with self._lock:
            return self._close(self.clock() if now is None else now)

    def _close(self, now: float) -> dict[str, Any] | None:
        counters, start = self._counters, self._start
        # Windows are aligned to their nominal length so a quiet device does not stretch one window.
        end = start + self.window_seconds if now >= start + self.window_seconds else now
        elapsed = max(0, int((now - start) // self.window_seconds)) if self.window_seconds > 0 else 0
        self._start = start + elapsed * self.window_seconds if elapsed else now
        self._counters = _Counters(self.baseline)
        if counters.n == 0 and counters.calls == 0 and not self.emit_empty:
            return None
        message = self._message(counters, start, end)
        self.sink.put(message)
        return message

    def _message(self, c: _Counters, start: float, end: float) -> dict[str, Any]:
        message = self._counts(c, start, end)
        if self.shadow is not None:
            try:
                sketch = self.shadow()
            except Exception:  # a broken shadow must never cost the active model's window
                sketch = None
            if sketch is not None:
                message["shadow"] = sketch
        return message

    def _counts(self, c: _Counters, start: float, end: float) -> dict[str, Any]:
        return {
            "schema": TELEMETRY_SCHEMA,
            "device_id": self.device_id,
            "window_seq": self.sink.next_window_seq(),
            "window_start": round(start, 3),
            "window_end": round(end, 3),
            "model": {"name": self.model_name, "version": self.model_version},
            "baseline_id": self.baseline.baseline_id,
            "n": c.n,
            "calls": c.calls,
            "errors": c.errors,
            "dropped_windows": self.sink.take_dropped(),
            "bins": _sparse(c.bins),
            "cats": _sparse(c.cats),
            "unseen": _sparse(c.unseen),
            "nan": _sparse(c.nan),
            "inf": _sparse(c.inf),
            "below_min": _sparse(c.below_min),
            "above_max": _sparse(c.above_max),
            "output": _sparse(c.output),
            "output_unseen": c.output_unseen,
            "confidence": _sparse(c.confidence),
            "latency": _sparse(c.latency),
        }

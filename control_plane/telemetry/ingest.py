"""The one ingest code path (MQTT and HTTP): validate, rate-limit, deduplicate, bulk insert, quarantine."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from control_plane.drift.sketch import TELEMETRY_SCHEMA, SketchLayout, TelemetryWindow, WindowError
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.fastparse import parse_windows
from control_plane.telemetry.lookup import BaselineCache, Cohort, CohortResolver
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from control_plane.telemetry.ratelimit import DeviceRateLimiter
from control_plane.telemetry.store import WindowValues, insert_windows

WINDOWS: Table = TelemetryWindowRow.__table__  # type: ignore[assignment]
QUARANTINE: Table = QuarantinedMessage.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class IncomingMessage:
    """One raw message as received; `device_hint` is the device the topic or token speaks for."""

    payload: bytes
    received_at: float
    source: str = "mqtt"
    topic: str | None = None
    device_hint: str | None = None


@dataclass
class IngestResult:
    """What one batch did; `models` are the (name, version) pairs that got new windows."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    models: set[tuple[str, int]] = field(default_factory=set)

    def add(self, other: IngestResult) -> None:
        """Accumulate another batch's counts."""
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined.update(other.quarantined)
        self.models |= other.models

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {"received": self.received, "stored": self.stored, "duplicates": self.duplicates,
                "quarantined": dict(self.quarantined)}


class Rejected(Exception):
    """A message to quarantine with a machine-readable reason."""

    def __init__(self, reason: str, detail: str, device_id: str | None = None, window_seq: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.device_id, self.window_seq = reason, detail, device_id, window_seq


try:  # orjson parses windows ~4x faster than json and is strict (no NaN); json explains its refusals.
    import orjson
except ImportError:  # pragma: no cover - orjson comes with chromadb, but the ingest must not need it
    orjson = None  # type: ignore[assignment]


def _fast_loads(data: bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(str(exc)) from exc
    return json.loads(data, parse_constant=_finite_reject)


def _dumps(value: Any) -> str:
    if orjson is not None:
        return orjson.dumps(value).decode()
    return json.dumps(value, separators=(",", ":"))


def _finite_reject(value: str) -> float:
    raise ValueError(f"non-finite number {value}")


def _decode(message: IncomingMessage, config: TelemetrySettings) -> dict[str, Any]:
    if len(message.payload) > config.max_message_bytes:
        raise Rejected("oversized", f"{len(message.payload)} bytes > {config.max_message_bytes}")
    try:
        document = _fast_loads(message.payload)
    except ValueError:
        try:
            # NaN/Infinity are not JSON; refuse them at parse time rather than let them reach the counters.
            document = json.loads(message.payload, parse_constant=_finite_reject)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = "nonfinite_count" if "non-finite" in str(exc) else "malformed_json"
            raise Rejected(reason, str(exc)[:200]) from exc
    if not isinstance(document, dict):
        raise Rejected("malformed", "message is not a JSON object")
    return document


class WindowIngestor:
    """Validate and store batches of windows; holds per-process caches and the rate limiter."""

    def __init__(self, config: TelemetrySettings, *, baselines: BaselineCache | None = None,
                 cohorts: CohortResolver | None = None) -> None:
        self.config = config
        self.baselines = baselines or BaselineCache()
        self.cohorts = cohorts or CohortResolver()
        self.limiter = DeviceRateLimiter(config.rate_per_second, config.rate_burst)
        self.totals = IngestResult()

    def _prepare(self, session: Session, message: IncomingMessage) -> tuple[dict[str, Any], SketchLayout]:
        document = _decode(message, self.config)
        ids = _ids(document)
        if document.get("schema") != TELEMETRY_SCHEMA:
            raise Rejected("wrong_schema", f"schema {_clip(document.get('schema'))} is not {TELEMETRY_SCHEMA}", *ids)
        if message.device_hint is not None and ids[0] != message.device_hint:
            raise Rejected("device_mismatch", f"message for {_clip(ids[0])} sent as {message.device_hint!r}", *ids)
        layout = self.baselines.get(session, str(document.get("baseline_id")))
        if layout is None:
            invalid = self.baselines.invalid_reason(str(document.get("baseline_id")))
            if invalid is not None:
                raise Rejected("baseline_invalid", f"the registered baseline is invalid: {invalid}"[:500], *ids)
            raise Rejected("unknown_baseline", f"baseline {_clip(document.get('baseline_id'))} is not registered", *ids)
        return document, layout

    def _admit(self, window: TelemetryWindow, message: IncomingMessage, now: float) -> None:
        ids = (window.device_id, window.window_seq)
        if window.window_end > now + self.config.clock_skew_seconds:
            raise Rejected("clock_skew", f"window ends {window.window_end - now:.0f}s in the future", *ids)
        if window.window_end < now - self.config.max_age_seconds:
            raise Rejected("too_old", f"window ended {now - window.window_end:.0f}s ago", *ids)
        if not self.limiter.allow(window.device_id, message.received_at):
            raise Rejected("rate_limited", f"device exceeds {self.config.rate_per_second}/s (burst "
                           f"{self.config.rate_burst:.0f})", *ids)

    def _validate(self, session: Session, messages: Sequence[IncomingMessage],
                  now: float) -> list[tuple[IncomingMessage, dict[str, Any], TelemetryWindow] | Rejected]:
        """Return per message its window or the reason to quarantine it (counts validated batch-wise)."""
        results: list[tuple[IncomingMessage, dict[str, Any], TelemetryWindow] | Rejected] = []
        pending: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        layouts: dict[str, SketchLayout] = {}
        for message in messages:
            try:
                document, layout = self._prepare(session, message)
            except Rejected as rejected:
                results.append(rejected)
                continue
            layouts[layout.baseline.baseline_id] = layout
            pending.setdefault(layout.baseline.baseline_id, []).append((len(results), document))
            results.append(Rejected("malformed", "not validated"))  # placeholder, replaced below
        for baseline_id, items in pending.items():
            # JSON booleans are the one type the batch validator must look for element by element; a payload
            # without the bytes `true`/`false` cannot hold one, and a substring search costs next to nothing.
            bool_free = [b"true" not in messages[p].payload and b"false" not in messages[p].payload for p, _ in items]
            parsed = parse_windows([document for _, document in items], layouts[baseline_id], bool_free=bool_free)
            for (position, document), outcome in zip(items, parsed, strict=True):
                message = messages[position]
                if isinstance(outcome, WindowError):
                    results[position] = Rejected(outcome.reason, str(outcome)[:500], *_ids(document))
                    continue
                try:
                    self._admit(outcome, message, now)
                except Rejected as rejected:
                    results[position] = rejected
                    continue
                results[position] = (message, document, outcome)
        return results

    def ingest(self, session: Session, messages: Sequence[IncomingMessage], *, now: float) -> IngestResult:
        """Store valid windows with insert-ignore on (device_id, window_seq); quarantine the rest. Only flushes."""
        result = IngestResult(received=len(messages))
        accepted: dict[tuple[str, int], tuple[TelemetryWindow, dict[str, Any], IncomingMessage]] = {}
        quarantine: list[dict[str, Any]] = []
        for message, outcome in zip(messages, self._validate(session, messages, now), strict=True):
            if isinstance(outcome, Rejected):
                result.quarantined[outcome.reason] += 1
                quarantine.append(self._quarantine_row(message, outcome))
                continue
            _, document, window = outcome
            key = (window.device_id, window.window_seq)
            if key in accepted:
                result.duplicates += 1
                continue
            accepted[key] = (window, document, message)
        if accepted:
            cohorts = self.cohorts.resolve(session, {k[0] for k in accepted})
            entries = list(accepted.values())
            sketches = _sketches([window.vector for window, _, _ in entries])
            rows = [_window_row(w, d, m, cohorts[w.device_id], sketch)
                    for (w, d, m), sketch in zip(entries, sketches, strict=True)]
            inserted = insert_windows(session, rows)
            result.stored = len(inserted)
            result.duplicates += len(rows) - len(inserted)
            result.models = {(accepted[k][0].model_name, accepted[k][0].model_version) for k in inserted}
        if quarantine:
            session.execute(insert(QUARANTINE), quarantine)
        session.flush()
        return result

    def _quarantine_row(self, message: IncomingMessage, rejected: Rejected) -> dict[str, Any]:
        limit = 256 if rejected.reason == "rate_limited" else self.config.quarantine_payload_bytes
        seq = rejected.window_seq
        return {
            "received_at": message.received_at, "source": message.source, "topic": message.topic,
            "device_id": (rejected.device_id or message.device_hint or "")[:200] or None,
            "window_seq": seq if seq is None or abs(seq) < 2**62 else None,
            "reason": rejected.reason, "detail": rejected.detail, "payload_size": len(message.payload),
            "payload": message.payload[:limit].decode("utf-8", errors="replace"),
        }


def _ids(document: dict[str, Any]) -> tuple[str | None, int | None]:
    device_id, seq = document.get("device_id"), document.get("window_seq")
    return (device_id if isinstance(device_id, str) else None,
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None)


def _clip(value: Any) -> str:
    return repr(str(value)[:80])


def _sketches(vectors: list[np.ndarray]) -> list[str]:
    """Return each vector as compact JSON `[[index...], [count...]]` of its non-zero entries (stored format)."""
    matrix = np.stack(vectors)
    rows, columns = np.nonzero(matrix)  # row-major: grouped by row, columns increasing
    indices, counts = columns.tolist(), matrix[rows, columns].tolist()
    ends = np.cumsum(np.bincount(rows, minlength=len(vectors))).tolist()
    # Whole-batch numpy calls and list slices: per-window numpy calls cost more than the data they move.
    sketches, start = [], 0
    for end in ends:
        sketches.append(_dumps([indices[start:end], counts[start:end]]))
        start = end
    return sketches


def _window_row(window: TelemetryWindow, document: dict[str, Any], message: IncomingMessage,
                cohort: Cohort, sketch: str) -> WindowValues:
    # The fleet is the authority on cohorts; a device-supplied rollout/group is only a fallback.
    group = cohort.device_group or _short(document.get("device_group"), 100)
    rollout = cohort.rollout_id or _short(document.get("rollout_id"), 40)
    # Order of control_plane.telemetry.store.COLUMNS.
    return (
        window.device_id, window.window_seq, window.model_name, window.model_version, window.baseline_id,
        window.window_start, window.window_end, message.received_at, group, rollout, cohort.deployment_id,
        int(document.get("n", 0)), int(document.get("calls", 0)), int(document.get("errors", 0)),
        window.dropped_windows, sketch,
    )


def _short(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None

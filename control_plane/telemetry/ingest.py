"""The one ingest code path (MQTT and HTTP): validate, rate-limit, deduplicate, bulk insert, quarantine."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Table
from sqlalchemy.orm import Session

from control_plane.constraints import INT32_MAX, INT64_MAX
from control_plane.drift.sketch import TELEMETRY_SCHEMA, SchemaError, SketchLayout, TelemetryWindow, WindowError
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.fastparse import parse_windows
from control_plane.telemetry.lookup import BaselineCache, Cohort, CohortResolver, ModelCatalog
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from control_plane.telemetry.ratelimit import DeviceRateLimiter
from control_plane.telemetry.sanity import Rejected, check_window, count_limit, text_ok
from control_plane.telemetry.shadow import store_sketches
from control_plane.telemetry.store import WindowValues, insert_quarantine, insert_windows_isolated

__all__ = ["IncomingMessage", "IngestResult", "Rejected", "WindowIngestor", "WindowOutcome"]

WINDOWS: Table = TelemetryWindowRow.__table__  # type: ignore[assignment]
QUARANTINE: Table = QuarantinedMessage.__table__  # type: ignore[assignment]
log = logging.getLogger(__name__)
ShadowEntry = tuple[TelemetryWindow, dict[str, Any], "IncomingMessage", Cohort]


@dataclass(frozen=True)
class IncomingMessage:
    """One raw message as received; `device_hint` is the device the topic or token speaks for."""

    payload: bytes
    received_at: float
    source: str = "mqtt"
    topic: str | None = None
    device_hint: str | None = None
    problem: tuple[str, str] | None = None  # (reason, detail) found before ingest, e.g. an unencodable body


class WindowOutcome(NamedTuple):
    """What became of one message: `stored`, `duplicate` or `quarantined` (with its reason)."""

    status: str  # a NamedTuple, not a frozen dataclass: one is built per message, ~10x cheaper
    device_id: str | None = None
    window_seq: int | None = None
    reason: str | None = None


@dataclass
class IngestResult:
    """What one batch did; `models` are the (name, version) pairs that got new windows."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    models: set[tuple[str, int]] = field(default_factory=set)
    # Shadow sketches carried by stored windows: stored, or quarantined alone (their window stays stored).
    shadow_stored: int = 0
    shadow_quarantined: Counter[str] = field(default_factory=Counter)
    # Per message, in input order (one batch only: `add` does not accumulate them).
    outcomes: list[WindowOutcome] = field(default_factory=list)

    def add(self, other: IngestResult) -> None:
        """Accumulate another batch's counts."""
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined.update(other.quarantined)
        self.models |= other.models
        self.shadow_stored += other.shadow_stored
        self.shadow_quarantined.update(other.shadow_quarantined)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {"received": self.received, "stored": self.stored, "duplicates": self.duplicates,
                "quarantined": dict(self.quarantined), "shadow_stored": self.shadow_stored,
                "shadow_quarantined": dict(self.shadow_quarantined)}


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
    if message.problem is not None:
        raise Rejected(*message.problem)
    if len(message.payload) > config.max_message_bytes:
        raise Rejected("oversized", f"{len(message.payload)} bytes > {config.max_message_bytes}")
    try:
        document = _fast_loads(message.payload)
    except ValueError as fast_error:
        if "recursion" in str(fast_error).lower():  # orjson stops at 1,024 levels; json would overflow the stack
            raise Rejected("too_deep", str(fast_error)[:200]) from fast_error
        try:
            # NaN/Infinity are not JSON; refuse them at parse time rather than let them reach the counters.
            document = json.loads(message.payload, parse_constant=_finite_reject)
        except RecursionError as exc:
            raise Rejected("too_deep", "JSON nested too deeply") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            reason = "nonfinite_count" if "non-finite" in str(exc) else "malformed_json"
            raise Rejected(reason, str(exc)[:200]) from exc
    except RecursionError as exc:  # the stdlib parser (no orjson) on a deeply nested payload
        raise Rejected("too_deep", "JSON nested too deeply") from exc
    if not isinstance(document, dict):
        raise Rejected("malformed", "message is not a JSON object")
    return document


class WindowIngestor:
    """Validate and store batches of windows; holds per-process caches and the rate limiter."""

    def __init__(self, config: TelemetrySettings, *, baselines: BaselineCache | None = None,
                 cohorts: CohortResolver | None = None, models: ModelCatalog | None = None) -> None:
        self.config = config
        self.baselines = baselines or BaselineCache()
        self.cohorts = cohorts or CohortResolver()
        self.models = models or ModelCatalog()
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

    def _admit(self, session: Session, window: TelemetryWindow, layout: SketchLayout, message: IncomingMessage,
               now: float, check_counts: bool = True) -> None:
        check_window(window, layout, max_window_seconds=self.config.max_window_seconds, check_counts=check_counts)
        ids = (window.device_id, window.window_seq)
        if window.window_end > now + self.config.clock_skew_seconds:
            raise Rejected("clock_skew", f"window ends {window.window_end - now:.0f}s in the future", *ids)
        if window.window_end < now - self.config.max_age_seconds:
            raise Rejected("too_old", f"window ended {now - window.window_end:.0f}s ago", *ids)
        if self.config.require_registered_model and not self.models.known(session, window.model_name,
                                                                          window.model_version):
            raise Rejected("unknown_model", f"model {_clip(window.model_name)} version {window.model_version} "
                           "is not registered", *ids)
        # Last: a window refused for any other reason must not use up the device's allowance.
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
            except Exception as exc:  # a payload that trips the checks themselves (e.g. nesting) is still just bad
                results.append(_unexpected(exc))
                continue
            layouts[layout.baseline.baseline_id] = layout
            pending.setdefault(layout.baseline.baseline_id, []).append((len(results), document))
            results.append(Rejected("malformed", "not validated"))  # placeholder, replaced below
        for baseline_id, items in pending.items():
            layout = layouts[baseline_id]
            parsed = self._parse(messages, items, layout)
            # One numpy call per batch instead of one per window; only a batch holding a huge count looks closer.
            vectors = [outcome.vector for outcome in parsed if not isinstance(outcome, WindowError)]
            check_counts = bool(vectors) and int(np.max(np.stack(vectors))) > count_limit(layout)
            for (position, document), outcome in zip(items, parsed, strict=True):
                message = messages[position]
                if isinstance(outcome, WindowError):
                    results[position] = Rejected(outcome.reason, str(outcome)[:500], *_ids(document))
                    continue
                try:
                    self._admit(session, outcome, layout, message, now, check_counts)
                except Rejected as rejected:
                    results[position] = rejected
                    continue
                except Exception as exc:
                    results[position] = _unexpected(exc, *_ids(document))
                    continue
                results[position] = (message, document, outcome)
        return results

    @staticmethod
    def _parse(messages: Sequence[IncomingMessage], items: list[tuple[int, dict[str, Any]]],
               layout: SketchLayout) -> list[TelemetryWindow | WindowError]:
        # JSON booleans are the one type the batch validator must look for element by element; a payload
        # without the bytes `true`/`false` cannot hold one, and a substring search costs next to nothing.
        bool_free = [b"true" not in messages[p].payload and b"false" not in messages[p].payload for p, _ in items]
        try:
            return parse_windows([document for _, document in items], layout, bool_free=bool_free)
        except Exception:  # never one message's fault for the batch: parse them one by one
            log.exception("batch window parser failed; parsing %d windows one at a time", len(items))
        parsed: list[TelemetryWindow | WindowError] = []
        for _, document in items:
            try:
                parsed += parse_windows([document], layout)
            except Exception as exc:
                parsed.append(SchemaError(f"unparseable window: {type(exc).__name__}"))
        return parsed

    def ingest(self, session: Session, messages: Sequence[IncomingMessage], *, now: float) -> IngestResult:
        """Store valid windows with insert-ignore on (device_id, window_seq); quarantine the rest. Only flushes.

        A window the database still refuses after validation is quarantined alone (reason `storage_error`);
        the others of the batch are stored. Errors of the database itself (connection lost) propagate.
        """
        result = IngestResult(received=len(messages))
        outcomes: list[WindowOutcome | None] = [None] * len(messages)
        accepted: dict[tuple[str, int], tuple[TelemetryWindow, dict[str, Any], IncomingMessage]] = {}
        positions: dict[tuple[str, int], list[int]] = {}
        quarantine: list[tuple[int, IncomingMessage, Rejected]] = []
        for position, (message, outcome) in enumerate(zip(messages, self._validate(session, messages, now),
                                                          strict=True)):
            if isinstance(outcome, Rejected):
                quarantine.append((position, message, outcome))
                continue
            _, document, window = outcome
            key = (window.device_id, window.window_seq)
            positions.setdefault(key, []).append(position)
            if key in accepted:
                result.duplicates += 1
                outcomes[position] = WindowOutcome("duplicate", *key)
                continue
            accepted[key] = (window, document, message)
        if accepted:
            keys = list(accepted)
            cohorts = self.cohorts.resolve(session, {k[0] for k in keys})
            entries = list(accepted.values())
            sketches = _sketches([window.vector for window, _, _ in entries])
            rows = [_window_row(w, d, m, cohorts[w.device_id], sketch)
                    for (w, d, m), sketch in zip(entries, sketches, strict=True)]
            inserted_keys, failed = insert_windows_isolated(session, rows)
            inserted = set(inserted_keys)
            for index, error in failed:
                window, _, message = entries[index]
                first = positions[keys[index]][0]
                quarantine.append((first, message, Rejected("storage_error", error[:500], *keys[index])))
            failed_keys = {keys[index] for index, _ in failed}
            for key in keys:
                if key in failed_keys:
                    continue
                status = "stored" if key in inserted else "duplicate"
                outcomes[positions[key][0]] = WindowOutcome(status, *key)
            result.stored = len(inserted)
            result.duplicates += len(rows) - len(inserted) - len(failed)
            result.models = {(accepted[k][0].model_name, accepted[k][0].model_version) for k in inserted}
            shadows = [(*accepted[k], cohorts[k[0]]) for k in keys if k in inserted and "shadow" in accepted[k][1]]
            if shadows:
                self._store_shadows(session, shadows, result)
        if quarantine:
            for position, _, rejected in quarantine:
                result.quarantined[rejected.reason] += 1
                outcomes[position] = WindowOutcome("quarantined", rejected.device_id, rejected.window_seq,
                                                   rejected.reason)
            insert_quarantine(session, [self.quarantine_row(m, r) for _, m, r in quarantine])
        session.flush()
        result.outcomes = [o if o is not None else WindowOutcome("quarantined", reason="unknown") for o in outcomes]
        return result

    def _store_shadows(self, session: Session, shadows: list[ShadowEntry], result: IngestResult) -> None:
        """Store the shadow sketch of each newly stored window; quarantine a bad one alone."""
        stored, refused = store_sketches(session, [(w, d["shadow"], m.received_at, c) for w, d, m, c in shadows])
        result.shadow_stored += stored
        for _, rejected in refused:
            result.shadow_quarantined[rejected.reason] += 1
        if refused:
            insert_quarantine(session, [self.quarantine_row(shadows[i][2], r) for i, r in refused])

    def quarantine_row(self, message: IncomingMessage, rejected: Rejected) -> dict[str, Any]:
        limit = 256 if rejected.reason == "rate_limited" else self.config.quarantine_payload_bytes
        seq = rejected.window_seq
        # Every value is made storable here: the quarantine is the path of last resort and must not fail.
        return {
            "received_at": message.received_at, "source": _storable(message.source, 10) or "unknown",
            "topic": _storable(message.topic, 300),
            "device_id": _storable(rejected.device_id or message.device_hint, 200),
            "window_seq": seq if isinstance(seq, int) and 0 <= seq <= INT64_MAX else None,
            "reason": rejected.reason[:40], "detail": _storable(rejected.detail, 2000) or "",
            "payload_size": min(len(message.payload), INT32_MAX),
            "payload": _storable(message.payload[:limit].decode("utf-8", errors="replace"), limit) or "",
        }


def _unexpected(exc: Exception, device_id: str | None = None, window_seq: int | None = None) -> Rejected:
    reason = "too_deep" if isinstance(exc, RecursionError) else "malformed"
    return Rejected(reason, f"{type(exc).__name__} while validating", device_id, window_seq)


def _storable(value: str | None, limit: int) -> str | None:
    """Return `value` cut to `limit` characters with NUL and lone surrogates replaced (both engines refuse them)."""
    if not value:
        return None
    value = value[:limit]
    if "\x00" in value or not value.isascii():
        value = value.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8")
    return value


def _ids(document: dict[str, Any]) -> tuple[str | None, int | None]:
    device_id, seq = document.get("device_id"), document.get("window_seq")
    return (device_id if isinstance(device_id, str) else None,
            seq if type(seq) is int and 0 <= seq <= INT64_MAX else None)


def _clip(value: Any) -> str:
    if not isinstance(value, str | int | float | None):
        return f"<{type(value).__name__}>"  # repr of a deeply nested value would itself overflow the stack
    return repr(str(value)[:80])


def _sketches(vectors: list[np.ndarray]) -> list[str]:
    """Return each vector as compact JSON `[[index...], [count...]]` of its non-zero entries (stored format)."""
    by_length: dict[int, list[int]] = {}
    for index, vector in enumerate(vectors):
        by_length.setdefault(len(vector), []).append(index)
    if len(by_length) == 1:
        return _same_layout_sketches(vectors)
    # Windows of different baselines have layouts of different lengths: one stack per layout, so one batch
    # holding both never fails as a whole.
    sketches = [""] * len(vectors)
    for members in by_length.values():
        for index, sketch in zip(members, _same_layout_sketches([vectors[i] for i in members]), strict=True):
            sketches[index] = sketch
    return sketches


def _same_layout_sketches(vectors: list[np.ndarray]) -> list[str]:
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
    # A device-supplied hint that could not be stored is dropped, not the window (the fleet tables win anyway).
    return value[:limit] if text_ok(value, 10**6) else None

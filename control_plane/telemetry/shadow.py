"""Shadow sketches inside telemetry windows: validate each one on its own, store it, or quarantine it alone.

A device shadowing a staged candidate (edge_agent/shadow.py) adds a `shadow` object to its window: agreement with
the active model (or an absolute-error histogram for a regressor), the candidate's label counts, latency
histograms of both models on the same sampled rows, errors, drops, and which candidate it ran. Everything is
checked against fixed bounds before it may reach a column. A bad sketch is quarantined with a `shadow_*` reason
and never costs its window (stored without it) nor any other message of the batch.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from control_plane.constraints import INT32_MAX
from control_plane.drift.sketch import TelemetryWindow
from control_plane.telemetry.lookup import Cohort
from control_plane.telemetry.models import ShadowWindowRow
from control_plane.telemetry.sanity import MAX_WINDOW_COUNT, Rejected, text_ok
from control_plane.telemetry.store import UNAVAILABLE

log = logging.getLogger(__name__)
SHADOW_SCHEMA = "edgeloop.shadow/v1"
# The device's fixed buckets (edge_agent.shadow); sketches with other buckets could not be merged.
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)
ERROR_BUCKETS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
MAX_LABELS = 65  # the device keeps 64 distinct labels plus its "__other__" bucket
STOP_REASONS = frozenset({"shadow_errors", "shadow_too_slow"})
SHADOW: Table = ShadowWindowRow.__table__  # type: ignore[assignment]
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ROLLOUT = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_FIELDS = frozenset({"schema", "model", "rollout_id", "candidate", "kind", "window_start", "window_end",
                     "sample_rate", "max_latency_ms", "batches", "samples", "rows", "agree", "agreement",
                     "candidate_labels", "latency_buckets_ms", "latency_counts", "active_latency_counts",
                     "error_buckets", "error_counts", "errors", "dropped", "stopped"})


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_WINDOW_COUNT


def _number(value: Any, low: float, high: float) -> bool:
    return type(value) in (int, float) and low <= value <= high  # NaN fails both comparisons


def _counts(value: Any, length: int) -> bool:
    return type(value) is list and len(value) == length and all(_count(v) for v in value)


def parse_sketch(sketch: Any, device_id: str, window_seq: int) -> dict[str, Any]:
    """Return the column values of a valid sketch, or raise Rejected with a `shadow_*` reason."""
    ids = (device_id, window_seq)
    if type(sketch) is not dict or sketch.get("schema") != SHADOW_SCHEMA:
        raise Rejected("shadow_malformed", f"shadow is not an {SHADOW_SCHEMA} object", *ids)
    unknown = set(sketch) - _FIELDS
    if unknown:
        raise Rejected("shadow_malformed", f"unknown shadow fields {sorted(unknown)[:5]}"[:300], *ids)
    candidate = sketch.get("candidate")
    if type(candidate) is not dict or not text_ok(candidate.get("name")) \
            or type(candidate.get("version")) is not int or not 1 <= candidate["version"] <= INT32_MAX \
            or type(candidate.get("sha256")) is not str or not _SHA256.fullmatch(candidate["sha256"]):
        raise Rejected("shadow_bad_candidate", "candidate needs name, version 1..2^31-1 and a sha256", *ids)
    rollout_id = sketch.get("rollout_id")
    if type(rollout_id) is not str or not _ROLLOUT.fullmatch(rollout_id):
        raise Rejected("shadow_malformed", "rollout_id must be a rollout id", *ids)
    names = ("batches", "samples", "rows", "agree", "errors", "dropped")
    if not all(_count(sketch.get(name)) for name in names):
        raise Rejected("shadow_out_of_range", f"{', '.join(names)} must be integers within 0..2^40", *ids)
    if not _number(sketch.get("sample_rate"), 1e-9, 1.0) or not _number(sketch.get("max_latency_ms"), 1e-9, 3.6e6):
        raise Rejected("shadow_out_of_range", "sample_rate must be in (0, 1], max_latency_ms in (0, 3.6e6]", *ids)
    kind, stopped = sketch.get("kind"), sketch.get("stopped")
    if kind not in (None, "classification", "regression") or (stopped is not None and stopped not in STOP_REASONS):
        raise Rejected("shadow_malformed", "kind or stopped is not one the protocol names", *ids)
    if sketch.get("latency_buckets_ms") != list(LATENCY_BUCKETS_MS):
        raise Rejected("shadow_bad_buckets", "latency_buckets_ms differ from the protocol's", *ids)
    length = len(LATENCY_BUCKETS_MS) + 1
    if not _counts(sketch.get("latency_counts"), length) or not _counts(sketch.get("active_latency_counts"), length):
        raise Rejected("shadow_out_of_range", f"latency counts must be {length} integers within 0..2^40", *ids)
    labels = sketch.get("candidate_labels")
    if type(labels) is not dict or len(labels) > MAX_LABELS \
            or not all(text_ok(k, 100) and _count(v) for k, v in labels.items()):
        raise Rejected("shadow_out_of_range", f"candidate_labels: at most {MAX_LABELS} labels of <= 100 "
                       "characters with counts within 0..2^40", *ids)
    error_counts = sketch.get("error_counts")
    if kind == "regression":
        if sketch.get("error_buckets") != list(ERROR_BUCKETS) or not _counts(error_counts, len(ERROR_BUCKETS) + 1):
            raise Rejected("shadow_bad_buckets", "a regression sketch needs the protocol's error buckets", *ids)
    elif error_counts is not None:
        raise Rejected("shadow_malformed", "error_counts belong to regression sketches only", *ids)
    rows, samples = sketch["rows"], sketch["samples"]
    consistent = (sketch["agree"] <= rows and rows + sketch["errors"] == samples
                  and sum(sketch["latency_counts"]) == samples and sum(sketch["active_latency_counts"]) == samples
                  and (kind != "classification" or sum(labels.values()) == rows)
                  and (kind != "regression" or sum(error_counts or ()) == rows))
    if not consistent:
        raise Rejected("shadow_inconsistent", "counts do not add up (agree <= rows, rows + errors = samples, "
                       "histograms sum to samples)", *ids)
    return {
        "rollout_id": rollout_id, "candidate_name": candidate["name"], "candidate_version": candidate["version"],
        "candidate_sha256": candidate["sha256"], "kind": kind, "sample_rate": float(sketch["sample_rate"]),
        "max_latency_ms": float(sketch["max_latency_ms"]), "samples": samples, "rows": rows,
        "agree": sketch["agree"], "errors": sketch["errors"], "dropped": sketch["dropped"],
        "labels": json.dumps(labels, separators=(",", ":"), sort_keys=True),
        "latency": json.dumps(sketch["latency_counts"]), "active_latency": json.dumps(sketch["active_latency_counts"]),
        "error_counts": json.dumps(error_counts) if error_counts is not None else None, "stopped": stopped,
    }


def rollout_targets(session: Session, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Return the (rollout_id, device_id) pairs that are targets of their rollout (one query per batch)."""
    if not pairs:
        return set()
    from control_plane.fleet.models import RolloutTarget  # lazy, like the cohort resolver

    query = select(RolloutTarget.rollout_id, RolloutTarget.device_id).where(
        RolloutTarget.rollout_id.in_(sorted({r for r, _ in pairs})),
        RolloutTarget.device_id.in_(sorted({d for _, d in pairs})))
    try:
        with session.begin_nested():
            return {(str(r), str(d)) for r, d in session.execute(query)} & pairs
    except SQLAlchemyError:
        log.info("fleet tables not available; shadow sketches cannot be matched to rollouts")
        return set()


def insert_sketches(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert shadow rows unless their (device_id, window_seq) is stored; return how many were inserted."""
    if not rows:
        return 0
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = module.insert(SHADOW).on_conflict_do_nothing(index_elements=["device_id", "window_seq"]) \
        .returning(SHADOW.c.id)
    with session.begin_nested():
        return len(session.execute(statement, list(rows)).all())


def store_sketches(session: Session, sketches: Sequence[tuple[TelemetryWindow, Any, float, Cohort]]
                   ) -> tuple[int, list[tuple[int, Rejected]]]:
    """Validate and store (window, sketch, received_at, cohort) entries; return (stored, [(index, why)] refused)."""
    refused: list[tuple[int, Rejected]] = []
    parsed: list[tuple[int, TelemetryWindow, dict[str, Any]]] = []
    for index, (window, sketch, _, _) in enumerate(sketches):
        try:
            parsed.append((index, window, parse_sketch(sketch, window.device_id, window.window_seq)))
        except Rejected as rejected:
            refused.append((index, rejected))
        except Exception as exc:  # a sketch that trips the checks themselves is still just a bad sketch
            refused.append((index, Rejected("shadow_malformed", f"{type(exc).__name__} while validating",
                                            window.device_id, window.window_seq)))
    targets = rollout_targets(session, {(values["rollout_id"], w.device_id) for _, w, values in parsed})
    rows, kept = [], []
    for index, window, values in parsed:
        if (values["rollout_id"], window.device_id) not in targets:
            refused.append((index, Rejected("shadow_wrong_device", f"device {window.device_id!r} is not a target "
                                            f"of rollout {values['rollout_id']!r}", window.device_id,
                                            window.window_seq)))
            continue
        _, _, received_at, cohort = sketches[index]
        kept.append(index)
        rows.append({**values, "device_id": window.device_id, "window_seq": window.window_seq,
                     "device_group": cohort.device_group, "model_name": window.model_name,
                     "model_version": window.model_version, "window_start": window.window_start,
                     "window_end": window.window_end, "received_at": received_at})
    try:
        stored = insert_sketches(session, rows)
    except UNAVAILABLE:
        raise
    except Exception as exc:  # validated, yet refused: the windows stay stored, the sketches are quarantined
        log.exception("shadow sketches could not be stored")
        refused += [(index, Rejected("shadow_storage_error", type(exc).__name__, sketches[index][0].device_id,
                                     sketches[index][0].window_seq)) for index in kept]
        stored = 0
    return stored, sorted(refused, key=lambda item: item[0])

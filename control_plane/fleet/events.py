"""Validate and apply device status and presence messages; idempotent on event_id, never raising on bad input."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from control_plane.constraints import INT64_MAX, refuse_nul_deep
from control_plane.db.base import utcnow
from control_plane.fleet.models import Device, DeviceEvent, RolloutTarget
from control_plane.fleet.schemas import DEVICE_STATES, SUCCESS_STATES, TargetState
from control_plane.mqtt.topics import device_id_from_topic

STATUS_SCHEMA = "edgeloop.status/v1"
PRESENCE_SCHEMA = "edgeloop.presence/v1"
MAX_STORED_PAYLOAD = 2000
# Status and presence messages are a few hundred bytes; anything far larger is refused before json.loads.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_MODEL_DEPTH = 8
DEVICE_ID_MAX = 200
_PROGRESS = {"issued": 1, "received": 2, "downloading": 3, "verified": 4}
_IN_FLIGHT = frozenset(_PROGRESS)
# Which target states a device-reported final state may replace, for the same manifest. Progress only moves
# forward, and a finished target never moves back: `rejected` or `failed` after `activated` is a report about
# something else (a replayed retained manifest after a restart), never about the install that succeeded.
# activated <-> reverted stays open: a trial that reverts at boot, or a crash-interrupted trial retried later.
_FINAL_FROM = {
    "rejected": _IN_FLIGHT | {"timed_out"},
    "failed": _IN_FLIGHT | {"timed_out"},
    "activated": _IN_FLIGHT | {"timed_out", "reverted"},
    "reverted": _IN_FLIGHT | {"timed_out", "activated"},
    "staged": _IN_FLIGHT | {"timed_out"},  # blue-green: the end of a stage-only manifest
}


class MalformedMessage(ValueError):
    """The message cannot be applied; the text is the stored reason."""


@dataclass(frozen=True)
class Outcome:
    """What applying one message did."""

    accepted: bool
    duplicate: bool = False
    rollout_id: str | None = None
    reason: str | None = None


def may_move(current: str, reported: str) -> bool:
    """Return whether a target in ``current`` may take the device-reported state ``reported``."""
    if reported in _PROGRESS:
        return current in _PROGRESS and _PROGRESS[reported] > _PROGRESS[current]
    return current in _FINAL_FROM.get(reported, frozenset())


def _storable(value: str) -> bool:
    """Return whether both engines can store the text: no NUL, no lone surrogate (from a JSON \\ud800 escape)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_text(value: str, limit: int) -> str:
    # PostgreSQL refuses NUL in text; the stored copy of a bad message must never be what fails.
    return value[:limit].replace("\x00", "\\u0000")


def _when(ts: Any) -> datetime:
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts) and 0 < ts < 1e11:
        return datetime.fromtimestamp(ts, UTC)
    return utcnow()


def _parse(topic: str, payload: bytes, kind: str) -> tuple[str, dict[str, Any]]:
    topic_device = device_id_from_topic(topic)
    if topic_device is None:
        raise MalformedMessage("topic is not edgeloop/devices/<id>/<kind>")
    if len(topic_device) > DEVICE_ID_MAX or "\x00" in topic_device:
        raise MalformedMessage("device id in the topic is too long or contains NUL")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MalformedMessage(f"payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: 100k-deep nesting
        raise MalformedMessage("payload is not JSON") from exc
    if not isinstance(body, dict):
        raise MalformedMessage("payload is not a JSON object")
    expected = STATUS_SCHEMA if kind == "status" else PRESENCE_SCHEMA
    if body.get("schema") != expected:
        raise MalformedMessage(f"schema must be {expected}")
    if body.get("device_id") != topic_device:
        raise MalformedMessage("device_id differs from the topic's device")
    return topic_device, body


def _validate_status(body: dict[str, Any]) -> None:
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or not _storable(event_id):
        raise MalformedMessage("event_id must be a string of 1..64 characters")
    if body.get("state") not in DEVICE_STATES:
        raise MalformedMessage(f"unknown state {str(body.get('state'))[:40]!r}")
    sequence = body.get("sequence")
    if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)
                                 or not 0 <= sequence <= INT64_MAX):
        raise MalformedMessage("sequence must be an integer in 0..2^63-1 or null")
    for name, limit in (("rollout_id", 40), ("reason", 100), ("slot", 10)):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit or not _storable(value)):
            raise MalformedMessage(f"{name} must be a string of at most {limit} characters or null")
    _validate_model(body.get("model"))


def _validate_model(model: Any) -> None:
    if model is None:
        return
    if not isinstance(model, dict):
        raise MalformedMessage("model must be an object or null")
    try:
        refuse_nul_deep(model, max_depth=MAX_MODEL_DEPTH)
        json.dumps(model, ensure_ascii=False).encode("utf-8")  # a lone surrogate PostgreSQL's jsonb refuses
    except ValueError as exc:  # UnicodeEncodeError is a ValueError
        raise MalformedMessage(f"model: {exc}"[:200]) from exc


def _event_row(*, kind: str, payload: bytes, device_id: str | None, body: dict[str, Any] | None, accepted: bool,
               reason: str | None) -> dict[str, Any]:
    body = body or {}
    sequence, state, rollout_id = body.get("sequence"), body.get("state"), body.get("rollout_id")
    # A rejected message's fields are stored only when they fit their columns: the record of a bad message
    # must never be the thing that fails the batch.
    return {
        "event_id": body.get("event_id") if accepted else None,
        "device_id": _clean_text(device_id, DEVICE_ID_MAX) if device_id else None, "kind": kind[:20],
        "state": state if isinstance(state, str) and state in DEVICE_STATES else None,
        "rollout_id": _clean_text(rollout_id, 40) if isinstance(rollout_id, str) and _storable(rollout_id) else None,
        "sequence": sequence if isinstance(sequence, int) and not isinstance(sequence, bool)
        and 0 <= sequence <= INT64_MAX else None,
        "accepted": accepted, "reason": _clean_text(reason, 200) if reason else None,
        "payload": _clean_text(payload[:MAX_STORED_PAYLOAD].decode("utf-8", "replace"), MAX_STORED_PAYLOAD),
        "received_at": utcnow(),
    }


def quarantine_row(topic: str, payload: bytes, reason: str) -> dict[str, Any]:
    """Return the device-event row that records a message which could not be applied even on its own."""
    kind = topic.rsplit("/", 1)[-1]
    return _event_row(kind=kind, payload=payload, device_id=device_id_from_topic(topic), body=None,
                      accepted=False, reason=reason)


def _target_key(body: dict[str, Any]) -> tuple[str, int] | None:
    """Return the (rollout id, sequence) a status names, or None when it names no manifest.

    Only a status naming the exact manifest the device was sent is attributable. One without them (a rejection
    of junk that could not be parsed, or of a manifest with a bad signature) cannot be told apart from a
    message about something else, so it is kept as a device event and changes no rollout.
    """
    rollout_id, sequence = body.get("rollout_id"), body.get("sequence")
    if isinstance(rollout_id, str) and isinstance(sequence, int):
        return rollout_id, sequence
    return None


def _apply_status(targets: dict[tuple[str, str], RolloutTarget], device: Device, body: dict[str, Any]) -> str | None:
    state, sequence = body["state"], body.get("sequence")
    device.reported_state, device.reported_reason = state, body.get("reason")
    if sequence is not None:
        device.reported_sequence = sequence
    if body.get("model") is not None:
        device.reported_model = body["model"]
    if body.get("slot") is not None:
        device.reported_slot = body["slot"]
    device.last_seen = _when(body.get("ts"))
    key = _target_key(body)
    if key is None:
        return None
    rollout_id, sequence = key
    if state == "activated" and key == (device.desired_rollout_id, device.desired_sequence):
        # The manifest we want on the device is active (also a restore manifest sent after an abort, no target).
        device.active_artifact_id = device.desired_artifact_id or device.active_artifact_id
    target = targets.get((rollout_id, device.id))
    if target is None or target.sequence is None or target.sequence != sequence:
        return None  # Not the manifest this rollout sent this device: device state updated, rollout untouched.
    if state in {s.value for s in SUCCESS_STATES}:
        device.active_artifact_id = target.artifact_id
    if target.state == TargetState.CANCELLED.value or not may_move(target.state, state):
        return None
    target.state = state
    target.reason = body.get("reason")
    if state not in _PROGRESS:
        target.finished_at = utcnow()
    return rollout_id


def _apply_presence(device: Device, body: dict[str, Any]) -> None:
    if not isinstance(body.get("online"), bool):
        raise MalformedMessage("online must be a boolean")
    model, slot = body.get("model"), body.get("slot")
    _validate_model(model if isinstance(model, dict) else None)
    if slot is not None and (not isinstance(slot, str) or len(slot) > 10 or not _storable(slot)):
        raise MalformedMessage("slot must be a string of at most 10 characters or null")
    device.online = body["online"]
    device.last_seen = _when(body.get("ts"))
    if isinstance(model, dict):
        device.reported_model = model
    if slot is not None:
        device.reported_slot = slot


def _parse_checked(topic: str, payload: bytes) -> tuple[str, str, dict[str, Any]]:
    kind = topic.rsplit("/", 1)[-1]
    if kind not in ("status", "presence"):
        raise MalformedMessage(f"unexpected topic kind {kind!r}")
    device_id, body = _parse(topic, payload, kind)
    if kind == "status":
        _validate_status(body)
    return kind, device_id, body


def apply_batch(session: Session, messages: list[tuple[str, bytes]]) -> list[Outcome]:
    """Apply status and presence messages in the caller's transaction, with a handful of queries per batch.

    Bad input is stored with its reason and reported in the outcome, never raised.
    """
    parsed: list[tuple[str, str, dict[str, Any]] | MalformedMessage] = []
    for topic, payload in messages:
        try:
            parsed.append(_parse_checked(topic, payload))
        except MalformedMessage as exc:
            parsed.append(exc)
    device_ids = {p[1] for p in parsed if not isinstance(p, MalformedMessage)}
    devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(device_ids)))} if device_ids else {}
    event_ids = {p[2]["event_id"] for p in parsed if not isinstance(p, MalformedMessage) and p[0] == "status"}
    seen = set(session.scalars(select(DeviceEvent.event_id).where(DeviceEvent.event_id.in_(event_ids)))) \
        if event_ids else set()
    keys = {(key[0], p[1]) for p in parsed if not isinstance(p, MalformedMessage) and p[0] == "status"
            and p[1] in devices and (key := _target_key(p[2])) is not None}
    targets: dict[tuple[str, str], RolloutTarget] = {}
    for rollout_id in {k[0] for k in keys}:
        wanted = [d for r, d in keys if r == rollout_id]
        for target in session.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == rollout_id,
                                                                  RolloutTarget.device_id.in_(wanted))):
            targets[(rollout_id, target.device_id)] = target
    rows: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    for (topic, payload), item in zip(messages, parsed, strict=True):
        kind, device_id, body = topic.rsplit("/", 1)[-1], device_id_from_topic(topic), None
        try:
            if isinstance(item, MalformedMessage):
                raise item
            kind, device_id, body = item
            device = devices.get(device_id)
            if device is None:
                raise MalformedMessage("unknown device")
            if kind == "presence":
                _apply_presence(device, body)
                outcomes.append(Outcome(True))
                continue
            if body["event_id"] in seen:
                outcomes.append(Outcome(True, duplicate=True))
                continue
            seen.add(body["event_id"])
            touched = _apply_status(targets, device, body)
            rows.append(_event_row(kind=kind, payload=payload, device_id=device_id, body=body, accepted=True,
                                   reason=None))
            outcomes.append(Outcome(True, rollout_id=touched))
        except MalformedMessage as exc:
            rows.append(_event_row(kind=kind, payload=payload, device_id=device_id, body=body, accepted=False,
                                   reason=str(exc)))
            outcomes.append(Outcome(False, reason=str(exc)))
    if rows:
        session.execute(insert(DeviceEvent), rows)
    session.flush()
    return outcomes


def apply_message(session: Session, topic: str, payload: bytes) -> Outcome:
    """Apply one status or presence message in the caller's transaction; bad input is stored, not raised."""
    return apply_batch(session, [(topic, payload)])[0]

"""Validate and apply device status and presence messages; idempotent on event_id, never raising on bad input."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from control_plane.db.base import utcnow
from control_plane.fleet.models import Device, DeviceEvent, RolloutTarget
from control_plane.fleet.schemas import DEVICE_STATES, FAILURE_STATES, SUCCESS_STATES, TargetState
from control_plane.mqtt.topics import device_id_from_topic

STATUS_SCHEMA = "edgeloop.status/v1"
PRESENCE_SCHEMA = "edgeloop.presence/v1"
MAX_STORED_PAYLOAD = 2000
# Progress only moves forward; a final state may still replace another (activated, then reverted at boot).
_RANK = {"pending": 0, "issued": 1, "received": 2, "downloading": 3, "verified": 4}
_FINAL_RANK = 10


class MalformedMessage(ValueError):
    """The message cannot be applied; the text is the stored reason."""


@dataclass(frozen=True)
class Outcome:
    """What applying one message did."""

    accepted: bool
    duplicate: bool = False
    rollout_id: str | None = None
    reason: str | None = None


def _rank(state: str) -> int:
    return _RANK.get(state, _FINAL_RANK)


def _when(ts: Any) -> datetime:
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts) and 0 < ts < 1e11:
        return datetime.fromtimestamp(ts, UTC)
    return utcnow()


def _parse(topic: str, payload: bytes, kind: str) -> tuple[str, dict[str, Any]]:
    topic_device = device_id_from_topic(topic)
    if topic_device is None:
        raise MalformedMessage("topic is not edgeloop/devices/<id>/<kind>")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
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
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
        raise MalformedMessage("event_id must be a string of 1..64 characters")
    if body.get("state") not in DEVICE_STATES:
        raise MalformedMessage(f"unknown state {body.get('state')!r}")
    sequence = body.get("sequence")
    if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0):
        raise MalformedMessage("sequence must be a non-negative integer or null")
    for name, limit in (("rollout_id", 40), ("reason", 100), ("slot", 10)):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise MalformedMessage(f"{name} must be a string of at most {limit} characters or null")
    if body.get("model") is not None and not isinstance(body.get("model"), dict):
        raise MalformedMessage("model must be an object or null")


def _event_row(*, kind: str, payload: bytes, device_id: str | None, body: dict[str, Any] | None, accepted: bool,
               reason: str | None) -> dict[str, Any]:
    body = body or {}
    sequence = body.get("sequence")
    return {
        "event_id": body.get("event_id") if accepted else None, "device_id": device_id, "kind": kind[:20],
        "state": body.get("state") if isinstance(body.get("state"), str) else None,
        "rollout_id": body.get("rollout_id") if isinstance(body.get("rollout_id"), str) else None,
        "sequence": sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
        "accepted": accepted, "reason": reason,
        "payload": payload[:MAX_STORED_PAYLOAD].decode("utf-8", "replace"), "received_at": utcnow(),
    }


def _target_key(device: Device, body: dict[str, Any]) -> tuple[str | None, int | None]:
    rollout_id, sequence = body.get("rollout_id"), body.get("sequence")
    if rollout_id is None and sequence is None:
        # A manifest rejected before it could be parsed (bad_signature): it can only be the one we sent last.
        return device.desired_rollout_id, device.desired_sequence
    return rollout_id, sequence


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
    rollout_id, sequence = _target_key(device, body)
    if rollout_id is None:
        return None
    target = targets.get((rollout_id, device.id))
    if target is None or (sequence is not None and target.sequence != sequence):
        return None  # An event about an older manifest: device state updated, rollout untouched.
    if state in {s.value for s in SUCCESS_STATES}:
        device.active_artifact_id = target.artifact_id
    if target.state == TargetState.CANCELLED.value:
        return None
    final = state in {s.value for s in SUCCESS_STATES | FAILURE_STATES}
    if _rank(state) > _rank(target.state) or (final and target.state != state):
        target.state = state
        target.reason = body.get("reason")
        if final:
            target.finished_at = utcnow()
    return rollout_id


def _apply_presence(device: Device, body: dict[str, Any]) -> None:
    if not isinstance(body.get("online"), bool):
        raise MalformedMessage("online must be a boolean")
    device.online = body["online"]
    device.last_seen = _when(body.get("ts"))
    if isinstance(body.get("model"), dict):
        device.reported_model = body["model"]
    if isinstance(body.get("slot"), str):
        device.reported_slot = body["slot"][:10]


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
    keys = {(key[0], device.id) for p in parsed if not isinstance(p, MalformedMessage) and p[0] == "status"
            and (device := devices.get(p[1])) is not None and (key := _target_key(device, p[2]))[0] is not None}
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

"""Blue-green rollouts: issue the signed group cut-over (or switch back) and report staged/switched counts."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.fleet.manifests import ManifestFactory
from control_plane.fleet.models import Cutover, Deployment, Device, Rollout, RolloutTarget
from control_plane.fleet.rollouts import lock_rollout
from control_plane.fleet.schemas import BlueGreenRead, CutoverRequest, RolloutState, TargetState
from control_plane.registry.models import Artifact

CUTOVER_SCHEMA = "edgeloop.cutover/v1"
ROLLOUT_PREFIX = "edgeloop/rollouts"


def cutover_topic(rollout_id: str) -> str:
    """Return the retained topic a blue-green group listens on (rollout ids are generated, topic-safe)."""
    return f"{ROLLOUT_PREFIX}/{rollout_id}/cutover"


def _deployment(session: Session, rollout: Rollout) -> Deployment:
    deployment = session.get(Deployment, rollout.deployment_id)
    if deployment is None or deployment.strategy.get("kind") != "blue_green":
        raise Invalid(f"rollout {rollout.id} is not a blue_green rollout")
    return deployment


def _target_sha(session: Session, rollout: Rollout, deployment: Deployment, direction: str) -> str:
    if direction == "new":
        artifact = session.get(Artifact, deployment.artifact_id)
    else:
        previous = set(session.scalars(select(RolloutTarget.previous_artifact_id).where(
            RolloutTarget.rollout_id == rollout.id, RolloutTarget.state == TargetState.STAGED.value)))
        if len(previous) != 1 or None in previous:
            raise Conflict("the staged devices did not all run one model before this rollout; "
                           "switch them back with a rollback instead")
        artifact = session.get(Artifact, previous.pop())
    if artifact is None:
        raise Invalid("the artifact of that side no longer exists")
    return artifact.sha256


def issue_cutover(session: Session, factory: ManifestFactory, rollout_id: str, request: CutoverRequest,
                  actor: str, now: float | None = None) -> Cutover:
    """Sign one cut-over command for the whole group and queue it for the bridge to publish (retained)."""
    rollout = lock_rollout(session, rollout_id)  # Serialises sequences per rollout.
    deployment = _deployment(session, rollout)
    if rollout.state in (RolloutState.ABORTED.value, RolloutState.ROLLED_BACK.value):
        raise Conflict(f"rollout {rollout_id} is {rollout.state}")
    staged = session.scalar(select(func.count()).select_from(RolloutTarget).where(
        RolloutTarget.rollout_id == rollout_id, RolloutTarget.state == TargetState.STAGED.value)) or 0
    if not staged:
        raise Conflict(f"no device of rollout {rollout_id} has staged the model yet")
    target = _target_sha(session, rollout, deployment, request.to)
    last = session.scalar(select(func.max(Cutover.sequence)).where(Cutover.rollout_id == rollout_id))
    sequence = (last or 0) + 1
    now = time.time() if now is None else now
    at = request.at.timestamp() if request.at is not None else None
    if at is not None and at > now + factory.settings.manifest_ttl_seconds:
        raise Invalid("at is later than a signed command stays valid (manifest_ttl_seconds)")
    payload = {"schema": CUTOVER_SCHEMA, "rollout_id": rollout_id, "sequence": sequence, "target_sha256": target,
               "at": at, "issued_at": int(now), "expires_at": int(now + factory.settings.manifest_ttl_seconds)}
    data = json.dumps(payload, separators=(",", ":")).encode()
    keys = factory.keys
    envelope: dict[str, Any] = {"payload": base64.b64encode(data).decode(),
                                "signature": base64.b64encode(keys.signer.sign(data)).decode(),
                                "key_id": keys.signer.key_id}
    if keys.rotations:
        envelope["key_rotations"] = [json.loads(doc) for doc in keys.rotations]
    command = Cutover(rollout_id=rollout_id, sequence=sequence, direction=request.to, target_sha256=target,
                      at=request.at, envelope=json.dumps(envelope, separators=(",", ":")), created_by=actor)
    session.add(command)
    session.flush()
    audit.record(session, actor=actor, action="rollout.cutover", resource=("rollout", rollout_id),
                 data={"sequence": sequence, "to": request.to, "target_sha256": target, "at": at,
                       "staged": staged, "reason": request.reason or None})
    return command


def report(session: Session, rollout_id: str) -> BlueGreenRead:
    """Count staged targets and, for the last cut-over, the devices that switched, refused, or have not said."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} not found")
    _deployment(session, rollout)
    rows = session.execute(select(RolloutTarget.state, Device.reported_state, Device.reported_sequence,
                                  Device.reported_model).join(Device, Device.id == RolloutTarget.device_id)
                           .where(RolloutTarget.rollout_id == rollout_id)).all()
    last = session.scalars(select(Cutover).where(Cutover.rollout_id == rollout_id)
                           .order_by(Cutover.sequence.desc()).limit(1)).first()
    staged = sum(1 for row in rows if row[0] == TargetState.STAGED.value)
    replies: Counter[str] = Counter()
    serving: Counter[str] = Counter()
    for _, state, sequence, model in rows:
        if last is not None and sequence == last.sequence and state in ("switched", "not_switched"):
            replies[state] += 1
        if isinstance(model, dict):
            serving[f"{model.get('name')}@{model.get('version')}"] += 1
    switched, refused = replies["switched"], replies["not_switched"]
    last_read = None if last is None else {
        "sequence": last.sequence, "to": last.direction, "target_sha256": last.target_sha256,
        "at": _iso(last.at), "created_at": _iso(last.created_at), "published_at": _iso(last.published_at),
        "created_by": last.created_by}
    return BlueGreenRead(rollout_id=rollout_id, targets=len(rows), staged=staged, not_staged=len(rows) - staged,
                         last_cutover=last_read, switched=switched, not_switched=refused,
                         pending=(staged - switched - refused) if last is not None else 0, serving=dict(serving))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def pending_cutovers(session: Session, limit: int = 100) -> list[Cutover]:
    """Return cut-over commands the bridge has not published yet, oldest first."""
    return list(session.scalars(select(Cutover).where(Cutover.published_at.is_(None))
                                .order_by(Cutover.id).limit(limit)))


def mark_published(commands: list[Cutover]) -> None:
    """Record that the broker acknowledged these commands."""
    now = utcnow()
    for command in commands:
        command.published_at = now

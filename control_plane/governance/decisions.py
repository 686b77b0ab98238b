"""Which model decided this? The model a device ran at a time, from its own status reports, and who approved it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.base import utcnow
from control_plane.errors import Invalid, NotFound
from control_plane.fleet.models import Cutover, Deployment, Device, DeviceEvent, Manifest, Rollout, RolloutTarget
from control_plane.governance import records
from control_plane.governance.schemas import ApprovalStep, DecisionEvidence, DecisionRecord
from control_plane.registry.models import Artifact

ACTIVATION_STATES = ("activated", "switched")
RULE = ("the last accepted `activated` or `switched` status event from the device received at or before `at` "
        "(control-plane clock) that names a manifest issued to this device (`activated`: rollout id + manifest "
        "sequence) or a cut-over command of a rollout that targeted it (`switched`: rollout id + cut-over "
        "sequence); an activation the device later reported `reverted` (same manifest, still at or before `at`) "
        "is skipped")
# How many activation reports one look-up reads back before giving up (each is a few small indexed queries).
MAX_SCANNED = 50


@dataclass(frozen=True)
class _Resolved:
    rollout: Rollout
    artifact: Artifact | None
    sha256: str
    manifest_sequence: int | None
    cutover_sequence: int | None


def lookup(*, session: Session, device_id: str, at: datetime | None = None,
           now: datetime | None = None) -> DecisionRecord:
    """Return what was active on ``device_id`` at ``at`` (default now) and the approvals behind it."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id!r} not found")
    now = now or utcnow()
    at = at or now
    if at.tzinfo is None or at.utcoffset() is None:
        raise Invalid("at must carry a time zone, e.g. 2026-01-31T12:00:00Z", field="at")
    if at > now:
        raise Invalid(f"at ({at.isoformat()}) is in the future: nothing has been decided yet", field="at")
    if at < device.created_at:
        raise Invalid(f"device {device_id!r} did not exist at {at.isoformat()}: it was provisioned at "
                      f"{device.created_at.isoformat()}", field="at", provisioned_at=device.created_at.isoformat())
    record = DecisionRecord(device_id=device_id, at=at, status="none_recorded", rule=RULE)
    reports = list(session.scalars(
        select(DeviceEvent).where(DeviceEvent.device_id == device_id, DeviceEvent.kind == "status",
                                  DeviceEvent.accepted.is_(True), DeviceEvent.state.in_(ACTIVATION_STATES),
                                  DeviceEvent.received_at <= at)
        .order_by(DeviceEvent.received_at.desc(), DeviceEvent.id.desc()).limit(MAX_SCANNED)))
    for event in reports:
        resolved = _resolve(session, device_id, event)
        if resolved is None:
            record.caveats.append(f"status event {event.id} ({event.state}, received "
                                  f"{event.received_at.isoformat()}) names no manifest or cut-over issued to this "
                                  "device: not used")
            continue
        reverted = _reverted_after(session, device_id, event, at)
        if reverted is not None:
            record.caveats.append(f"status event {event.id} ({event.state}) was followed by `reverted` for the same "
                                  f"manifest (event {reverted.id}, received {reverted.received_at.isoformat()}): "
                                  "not used")
            continue
        _fill(session, record, event, resolved)
        return record
    if len(reports) == MAX_SCANNED:
        record.caveats.append(f"only the newest {MAX_SCANNED} activation reports were read")
    return record


def _resolve(session: Session, device_id: str, event: DeviceEvent) -> _Resolved | None:
    if event.rollout_id is None or event.sequence is None:
        return None
    target = session.get(RolloutTarget, (event.rollout_id, device_id))
    if event.state == "switched":
        command = session.scalar(select(Cutover).where(Cutover.rollout_id == event.rollout_id,
                                                       Cutover.sequence == event.sequence))
        rollout = session.get(Rollout, event.rollout_id)
        if command is None or target is None or rollout is None:
            return None
        return _Resolved(rollout, _artifact(session, command.target_sha256, rollout, target), command.target_sha256,
                         target.sequence, command.sequence)
    manifest = session.scalar(select(Manifest).where(Manifest.device_id == device_id,
                                                     Manifest.sequence == event.sequence))
    if manifest is None or manifest.rollout_id != event.rollout_id or not manifest.artifact_sha256:
        return None
    rollout = session.get(Rollout, manifest.rollout_id)
    if rollout is None:
        return None
    return _Resolved(rollout, _artifact(session, manifest.artifact_sha256, rollout, target), manifest.artifact_sha256,
                     manifest.sequence, None)


def _artifact(session: Session, sha256: str, rollout: Rollout, target: RolloutTarget | None) -> Artifact | None:
    """Return the artifact these bytes were shipped as: the rollout's own choices first (one blob may be attached
    to several versions), then any artifact with that hash."""
    deployment = session.get(Deployment, rollout.deployment_id)
    candidates = [target.artifact_id, target.previous_artifact_id] if target is not None else []
    candidates.append(deployment.artifact_id if deployment is not None else None)
    for artifact_id in candidates:
        artifact = session.get(Artifact, artifact_id) if artifact_id else None
        if artifact is not None and artifact.sha256 == sha256:
            return artifact
    return session.scalars(select(Artifact).where(Artifact.sha256 == sha256).order_by(Artifact.created_at)).first()


def _reverted_after(session: Session, device_id: str, event: DeviceEvent, at: datetime) -> DeviceEvent | None:
    if event.state != "activated":
        return None
    return session.scalars(select(DeviceEvent).where(
        DeviceEvent.device_id == device_id, DeviceEvent.kind == "status", DeviceEvent.accepted.is_(True),
        DeviceEvent.state == "reverted", DeviceEvent.rollout_id == event.rollout_id,
        DeviceEvent.sequence == event.sequence, DeviceEvent.received_at > event.received_at,
        DeviceEvent.received_at <= at).order_by(DeviceEvent.received_at).limit(1)).first()


def _fill(session: Session, record: DecisionRecord, event: DeviceEvent, resolved: _Resolved) -> None:
    rollout, artifact = resolved.rollout, resolved.artifact
    record.status = "active"
    record.artifact_sha256 = resolved.sha256
    record.manifest_sequence, record.cutover_sequence = resolved.manifest_sequence, resolved.cutover_sequence
    record.rollout_id, record.rollout_kind, record.rollout_state = rollout.id, rollout.kind, rollout.state
    record.rollback_of, record.deployment_id = rollout.rollback_of, rollout.deployment_id
    if artifact is not None:
        version = artifact.model_version
        record.model, record.version, record.version_id = version.model.name, version.version, version.id
        record.artifact_id, record.quantization = artifact.id, artifact.quantization
    else:
        record.caveats.append(f"no registered artifact has sha256 {resolved.sha256}")
    reported = _reported_model(event)
    record.evidence = DecisionEvidence(
        device_event_id=event.id, event_id=event.event_id, state=event.state or "", received_at=event.received_at,
        device_ts=_device_ts(event), rollout_id=event.rollout_id, sequence=event.sequence, reported_model=reported)
    if reported is not None and record.version is not None and reported.get("version") not in (None, record.version):
        record.caveats.append(f"the device reported model {reported.get('name')} v{reported.get('version')}, "
                              f"the manifest names v{record.version}")
    record.approvals = approval_chain(session, rollout)
    if rollout.rollback_of is not None:
        record.caveats.append(f"rollout {rollout.id} rolls back {rollout.rollback_of}: its deployment.create step is "
                              "that of the deployment it rolled back, not a decision to run this version")


def _reported_model(event: DeviceEvent) -> dict[str, object] | None:
    body = records.json_object(event.payload)
    model = body.get("model") if body else None
    return model if isinstance(model, dict) else None


def _device_ts(event: DeviceEvent) -> float | None:
    body = records.json_object(event.payload)
    ts = body.get("ts") if body else None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


def approval_chain(session: Session, rollout: Rollout) -> list[ApprovalStep]:
    """Return who created the deployment and rollout, and every proposal (proposed, decided, executed) behind it."""
    trails = records.audit_entries(session, [("deployment", rollout.deployment_id), ("rollout", rollout.id)],
                                   actions=("deployment.create", "rollout.create"))
    steps = [ApprovalStep(step=e.action, actor=e.actor, at=e.ts, audit_seq=e.seq,
                          reason=records.text_or_none(records.data_of(e).get("reason")))
             for key in (("deployment", rollout.deployment_id), ("rollout", rollout.id)) for e in trails[key]]
    named = [records.proposal_id_in(step.reason) for step in steps]
    proposals = records.proposals_touching(session, result_mentions=[rollout.id, rollout.deployment_id])
    proposals += records.proposals_by_id(session, [p for p in named if p])
    for decision in records.decisions_for(session, proposals):
        for entry in decision.audit:
            reason = decision.decision_reason if entry.action in ("proposal.approved", "proposal.rejected") else None
            steps.append(ApprovalStep(step=entry.action, actor=entry.actor, at=entry.ts, audit_seq=entry.seq,
                                      proposal_id=decision.proposal_id, reason=reason))
    return sorted(steps, key=lambda s: (s.audit_seq is None, s.audit_seq or 0))

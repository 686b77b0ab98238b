"""A model version's history for its card: deployments, rollouts and outcomes, incidents, human decisions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from control_plane.fleet.models import Deployment, Rollout, RolloutTarget
from control_plane.governance import records
from control_plane.governance.schemas import AuditRef, CardDeployment, CardIncident, CardRollout, HumanDecision
from control_plane.incidents.models import Incident
from control_plane.lineage.models import LineageEdge
from control_plane.lineage.schemas import NodeKind
from control_plane.registry.models import ModelVersion

MAX_ROWS = 200
# Audit actions on a registered model that concern one of its versions (alias moves name from/to versions).
_ALIAS_ACTIONS = ("model_alias.set", "model_alias.delete")


@dataclass
class FleetHistory:
    """Deployments of a version and every rollout that shipped, rolled back or restored it."""

    deployments: list[CardDeployment] = field(default_factory=list)
    rollouts: list[CardRollout] = field(default_factory=list)


def fleet_history(session: Session, version: ModelVersion) -> FleetHistory:
    """Return the version's deployments, and its rollouts with per-state device counts and audit trails."""
    deployments = list(session.scalars(select(Deployment).where(Deployment.model_version_id == version.id)
                                       .order_by(Deployment.created_at).limit(MAX_ROWS)))
    deployment_ids = [d.id for d in deployments]
    artifact_ids = [a.id for a in version.artifacts]
    # A rollback rollout of another version's deployment whose targets return devices to this version restores it.
    restoring = select(RolloutTarget.rollout_id).where(RolloutTarget.artifact_id.in_(artifact_ids)).distinct() \
        if artifact_ids else None
    clauses: list[ColumnElement[bool]] = [Rollout.deployment_id.in_(deployment_ids)] if deployment_ids else []
    if restoring is not None:
        clauses.append(and_(Rollout.kind == "rollback", Rollout.id.in_(restoring)))
    rollouts = list(session.scalars(select(Rollout).where(or_(*clauses)).order_by(Rollout.created_at)
                                    .limit(MAX_ROWS))) if clauses else []
    counts: dict[str, Counter[str]] = {r.id: Counter() for r in rollouts}
    if rollouts:
        for rollout_id, state, count in session.execute(
                select(RolloutTarget.rollout_id, RolloutTarget.state, func.count())
                .where(RolloutTarget.rollout_id.in_(list(counts))).group_by(RolloutTarget.rollout_id,
                                                                            RolloutTarget.state)):
            counts[rollout_id][state] = int(count)
    trails = records.audit_entries(session, [("rollout", r.id) for r in rollouts]
                                   + [("deployment", d.id) for d in deployments])
    history = FleetHistory()
    for deployment in deployments:
        created = trails.get(("deployment", deployment.id), [])
        history.deployments.append(CardDeployment(
            id=deployment.id, artifact_id=deployment.artifact_id, selector=deployment.selector,
            created_by=deployment.created_by, created_at=deployment.created_at,
            audit_seq=created[0].seq if created else None))
    ours = set(deployment_ids)
    for rollout in rollouts:
        role = ("deployed" if rollout.kind != "rollback" else "rolled_back") if rollout.deployment_id in ours \
            else "restored"
        history.rollouts.append(CardRollout(
            id=rollout.id, kind=rollout.kind, role=role, state=rollout.state, rollback_of=rollout.rollback_of,
            reason=rollout.reason, created_by=rollout.created_by, created_at=rollout.created_at,
            finished_at=rollout.finished_at, targets=dict(sorted(counts[rollout.id].items())),
            audit=[records.ref(e) for e in trails.get(("rollout", rollout.id), [])]))
    return history


def incidents(session: Session, version: ModelVersion) -> list[CardIncident]:
    """Return incidents about the version: by model name and number, or linked to it in lineage."""
    linked = select(LineageEdge.dst_id).where(
        LineageEdge.src_kind == NodeKind.MODEL_VERSION.value, LineageEdge.src_id == version.id,
        LineageEdge.dst_kind == NodeKind.INCIDENT.value)
    # A challenger trained because of an incident is linked from it (incident → model_version).
    upstream = select(LineageEdge.src_id).where(
        LineageEdge.dst_kind == NodeKind.MODEL_VERSION.value, LineageEdge.dst_id == version.id,
        LineageEdge.src_kind == NodeKind.INCIDENT.value)
    rows = session.scalars(select(Incident).where(or_(
        and_(Incident.model_name == version.model.name, Incident.model_version == version.version),
        Incident.id.in_(linked), Incident.id.in_(upstream))).order_by(Incident.created_at).limit(MAX_ROWS))
    return [CardIncident(id=i.id, title=i.title, state=i.state, severity=i.severity, created_at=i.created_at,
                         resolved_at=i.resolved_at, resolved_by=i.resolved_by) for i in rows]


def decisions(session: Session, version: ModelVersion, fleet: FleetHistory,
              incident_rows: list[CardIncident]) -> list[HumanDecision]:
    """Return the proposals aimed at the version, its rollouts or deployments, or raised for its incidents."""
    rollout_ids = [r.id for r in fleet.rollouts]
    targets = [("rollout", rid) for rid in rollout_ids] + [("deployment", d.id) for d in fleet.deployments] + [
        ("model_version", f"{version.model.name}@{version.version}"), ("model_version", version.id)]
    found = records.proposals_touching(
        session, targets=targets, incident_ids=[i.id for i in incident_rows],
        result_mentions=[*rollout_ids, *(d.id for d in fleet.deployments), version.id])
    return records.decisions_for(session, found)


def other_actions(session: Session, version: ModelVersion) -> list[AuditRef]:
    """Return the audit entries on the version itself and the alias moves that named it."""
    trails = records.audit_entries(session, [("model_version", version.id)])
    own = trails.get(("model_version", version.id), [])
    moves = records.audit_entries(session, [("model", version.model_id)], actions=_ALIAS_ACTIONS)
    naming = [e for e in moves.get(("model", version.model_id), [])
              if version.version in {records.data_of(e).get(k) for k in ("from_version", "to_version", "version")}]
    return [records.ref(e) for e in sorted([*own, *naming], key=lambda e: e.seq)]

"""Correlate alerts into incidents, move incidents through their states and keep their typed timeline."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from control_plane.alerts.models import Alert
from control_plane.alerts.schemas import SEVERITY_RANK, Severity
from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.incidents import evidence
from control_plane.incidents.models import CorrelationRuleRow, Incident, IncidentAlert, IncidentTimelineEntry
from control_plane.incidents.schemas import (
    ACTIVE_STATES,
    TRANSITIONS,
    CorrelationRule,
    IncidentCreate,
    IncidentRead,
    IncidentState,
    RcaReport,
    TimelineKind,
    TimelinePost,
    TriageNote,
)
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.prompts.models import AgentRun

SYSTEM_ACTOR = "system:incident-correlator"
RULE_ROW_ID = 1


def get_rule(*, session: Session) -> CorrelationRule:
    """Return the stored correlation rule, or the documented default."""
    row = session.get(CorrelationRuleRow, RULE_ROW_ID)
    if row is None:
        return CorrelationRule()
    return CorrelationRule(keys=row.keys, window_seconds=row.window_seconds, cooldown_seconds=row.cooldown_seconds)


def set_rule(*, session: Session, rule: CorrelationRule, actor: str) -> CorrelationRule:
    """Replace the correlation rule; it applies to alerts raised from now on."""
    row = session.get(CorrelationRuleRow, RULE_ROW_ID)
    if row is None:
        row = CorrelationRuleRow(id=RULE_ROW_ID, updated_by=actor, updated_at=utcnow(), **rule.model_dump())
        session.add(row)
    else:
        row.keys, row.window_seconds, row.cooldown_seconds = rule.keys, rule.window_seconds, rule.cooldown_seconds
        row.updated_by, row.updated_at = actor, utcnow()
    session.flush()
    audit.record(session, actor=actor, action="incident.rule_set", resource=("incident_rule", str(RULE_ROW_ID)),
                 data=rule.model_dump())
    return rule


def key_values(alert: Alert, rule: CorrelationRule) -> dict[str, Any]:
    """Return the alert's value for each key of the rule (None where the alert has none)."""
    values: dict[str, Any] = {}
    for key in rule.keys:
        if key.startswith("evidence."):
            raw = (alert.evidence or {}).get(key.removeprefix("evidence."))
            values[key] = raw if isinstance(raw, str | int | float | bool) or raw is None else json.dumps(raw)
        else:
            values[key] = getattr(alert, key)
    return values


def correlation_key(values: dict[str, Any]) -> str:
    """Hash key values into the fixed-width key incidents are indexed by."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _lock_key(session: Session, key: str) -> None:
    # Serialise correlation of one key across replicas; SQLite writers already hold the database lock.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(key[:15], 16)})


def add_entry(session: Session, incident_id: str, kind: TimelineKind, author: str, body: dict[str, Any],
              agent_run_id: str | None = None) -> IncidentTimelineEntry:
    """Append a typed entry to an incident's timeline."""
    entry = IncidentTimelineEntry(incident_id=incident_id, kind=kind.value, author=author,
                                  agent_run_id=agent_run_id, body=body)
    session.add(entry)
    session.flush()
    return entry


def _join(session: Session, incident: Incident, alert: Alert, actor: str, now: datetime) -> None:
    session.add(IncidentAlert(alert_id=alert.id, incident_id=incident.id))
    incident.alert_count += 1
    incident.first_alert_at = incident.first_alert_at or now
    incident.last_alert_at = now
    incident.updated_at = now
    if SEVERITY_RANK[Severity(alert.severity)] > SEVERITY_RANK[Severity(incident.severity)]:
        incident.severity = alert.severity
    session.flush()
    lineage.link(session, (NodeKind.ALERT, alert.id), (NodeKind.INCIDENT, incident.id), "grouped_into")
    if alert.model_version_id:
        lineage.link(session, (NodeKind.MODEL_VERSION, alert.model_version_id), (NodeKind.INCIDENT, incident.id),
                     "affected_by")
    if alert.deployment_id:
        lineage.link(session, (NodeKind.DEPLOYMENT, alert.deployment_id), (NodeKind.INCIDENT, incident.id),
                     "affected_by")
    add_entry(session, incident.id, TimelineKind.ALERT_JOINED, actor,
              {"alert_id": alert.id, "check": alert.check, "severity": alert.severity, "title": alert.title,
               "feature": alert.feature})
    audit.record(session, actor=actor, action="incident.alert_joined", resource=("incident", incident.id),
                 data={"alert_id": alert.id, "severity": incident.severity, "check": alert.check})


def correlate_alert(*, session: Session, alert: Alert, actor: str = SYSTEM_ACTOR) -> Incident:
    """Put a new alert into the matching incident: join an active one, reopen a recent one, or open one."""
    rule = get_rule(session=session)
    values = key_values(alert, rule)
    key = correlation_key(values)
    _lock_key(session, key)
    now = utcnow()
    latest = session.scalar(select(Incident).where(Incident.correlation_key == key)
                            .order_by(Incident.last_alert_at.desc(), Incident.created_at.desc()).limit(1))
    window, cooldown = timedelta(seconds=rule.window_seconds), timedelta(seconds=rule.cooldown_seconds)
    if latest is not None and latest.state in ACTIVE_STATES and latest.last_alert_at is not None \
            and now - latest.last_alert_at <= window:
        _join(session, latest, alert, actor, now)
        return latest
    if latest is not None and latest.state == IncidentState.RESOLVED and latest.resolved_at is not None \
            and now - latest.resolved_at <= cooldown:
        _move(session, latest, IncidentState.OPEN, actor, f"recurred: alert {alert.id}", now, reopened=True)
        _join(session, latest, alert, actor, now)
        return latest
    incident = Incident(title=f"{alert.model_name} v{alert.model_version}: {alert.title}"[:300],
                        state=IncidentState.OPEN.value, severity=alert.severity, correlation_key=key,
                        key_values=values, model_name=alert.model_name, model_version=alert.model_version,
                        deployment_id=alert.deployment_id, created_by=actor, updated_at=now)
    session.add(incident)
    session.flush()
    audit.record(session, actor=actor, action="incident.open", resource=("incident", incident.id),
                 data={"key_values": values, "severity": incident.severity, "alert_id": alert.id})
    _join(session, incident, alert, actor, now)
    return incident


def on_alert_escalated(*, session: Session, alert: Alert, actor: str = SYSTEM_ACTOR) -> None:
    """Raise the incident's severity with its alert's (severity is the maximum of its alerts)."""
    incident_id = session.scalar(select(IncidentAlert.incident_id).where(IncidentAlert.alert_id == alert.id))
    incident = session.get(Incident, incident_id) if incident_id else None
    if incident is not None and SEVERITY_RANK[Severity(alert.severity)] > SEVERITY_RANK[Severity(incident.severity)]:
        incident.severity = alert.severity
        incident.updated_at = utcnow()
        audit.record(session, actor=actor, action="incident.escalate", resource=("incident", incident.id),
                     data={"severity": incident.severity, "alert_id": alert.id})


def _move(session: Session, incident: Incident, state: IncidentState, actor: str, reason: str, now: datetime,
          reopened: bool = False) -> None:
    previous = incident.state
    incident.state = state.value
    incident.updated_at = now
    if state == IncidentState.RESOLVED:
        incident.resolved_at, incident.resolved_by = now, actor
    if state == IncidentState.DISMISSED:
        incident.dismissed_reason = reason
    if reopened:
        incident.reopen_count += 1
        incident.resolved_at = incident.resolved_by = None
    session.flush()
    add_entry(session, incident.id, TimelineKind.STATE_CHANGE, actor,
              {"from": previous, "to": state.value, "reason": reason, "reopened": reopened})
    action = "incident.reopen" if reopened else f"incident.{state.value}"
    audit.record(session, actor=actor, action=action, resource=("incident", incident.id),
                 data={"from": previous, "to": state.value, "reason": reason})


def get_incident(*, session: Session, incident_id: str, lock: bool = False) -> Incident:
    """Return an incident or raise NotFound."""
    query = select(Incident).where(Incident.id == incident_id)
    incident = session.scalar(query.with_for_update() if lock else query)
    if incident is None:
        raise NotFound(f"incident {incident_id!r} not found")
    return incident


def transition(*, session: Session, incident_id: str, state: IncidentState, reason: str, actor: str) -> Incident:
    """Move an incident along its lifecycle; dismissing needs a reason."""
    incident = get_incident(session=session, incident_id=incident_id, lock=True)
    current = IncidentState(incident.state)
    if state == current:
        return incident
    if state not in TRANSITIONS[current]:
        raise Conflict(f"incident {incident_id} is {current.value}; it cannot become {state.value}",
                       state=current.value, allowed=sorted(s.value for s in TRANSITIONS[current]))
    if state == IncidentState.DISMISSED and not reason.strip():
        raise Invalid("a reason is required to dismiss an incident", field="reason")
    _move(session, incident, state, actor, reason, utcnow(), reopened=current == IncidentState.RESOLVED)
    return incident


def create_incident(*, session: Session, request: IncidentCreate, actor: str) -> Incident:
    """Open an incident by hand, taking in alerts that belong to no incident yet."""
    now = utcnow()
    incident = Incident(title=request.title, state=IncidentState.OPEN.value, severity=request.severity.value,
                        correlation_key=correlation_key({"manual": now.isoformat(), "by": actor}),
                        key_values={"manual": True}, created_by=actor, updated_at=now)
    session.add(incident)
    session.flush()
    audit.record(session, actor=actor, action="incident.open", resource=("incident", incident.id),
                 data={"manual": True, "severity": incident.severity, "title": incident.title})
    for alert_id in dict.fromkeys(request.alert_ids):
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise NotFound(f"alert {alert_id!r} not found")
        owner = session.scalar(select(IncidentAlert.incident_id).where(IncidentAlert.alert_id == alert_id))
        if owner is not None:
            raise Conflict(f"alert {alert_id!r} already belongs to incident {owner}", incident_id=owner)
        _join(session, incident, alert, actor, now)
    return incident


def post_entry(*, session: Session, incident_id: str, post: TimelinePost, actor: str) -> IncidentTimelineEntry:
    """Add a triage note, RCA report or comment after checking every evidence reference and the agent run."""
    incident = get_incident(session=session, incident_id=incident_id)
    if post.agent_run_id is not None and session.get(AgentRun, post.agent_run_id) is None:
        raise Invalid(f"agent run {post.agent_run_id!r} not found", field="agent_run_id")
    refs = []
    if isinstance(post, TriageNote):
        refs = [(f"evidence[{i}]", ref) for i, ref in enumerate(post.evidence)]
    elif isinstance(post, RcaReport):
        refs = [(f"hypotheses[{h}].evidence[{i}]", ref) for h, hypothesis in enumerate(post.hypotheses)
                for i, ref in enumerate(hypothesis.evidence)]
    evidence.check_refs(session, refs)
    _link_evidence(session, incident.id, [ref for _, ref in refs])
    body = post.model_dump(mode="json", exclude={"kind", "agent_run_id"})
    entry = add_entry(session, incident.id, TimelineKind(post.kind), actor, body, post.agent_run_id)
    if post.agent_run_id:
        lineage.link(session, (NodeKind.AGENT_RUN, post.agent_run_id), (NodeKind.INCIDENT, incident.id),
                     post.kind)
    audit.record(session, actor=actor, action=f"incident.{post.kind}", resource=("incident", incident.id),
                 data={"entry_id": entry.id, "agent_run_id": post.agent_run_id})
    incident.updated_at = utcnow()
    return entry


_LINKED_EVIDENCE = {"model_version": NodeKind.MODEL_VERSION, "deployment": NodeKind.DEPLOYMENT,
                    "rollout": NodeKind.ROLLOUT, "prompt_version": NodeKind.PROMPT_VERSION,
                    "eval_run": NodeKind.EVAL_RUN}


def _link_evidence(session: Session, incident_id: str, refs: list[Any]) -> None:
    """Link the model versions, deployments, rollouts, prompt versions and eval runs an entry cites."""
    for ref in refs:
        kind = _LINKED_EVIDENCE.get(ref.kind)
        if kind is None:
            continue
        node_id = evidence.prompt_version_id(session, ref.id) if ref.kind == "prompt_version" else ref.id
        if node_id:
            lineage.link(session, (kind, node_id), (NodeKind.INCIDENT, incident_id), "evidence_for")


def list_timeline(*, session: Session, incident_id: str, after_id: int = 0, limit: int = 500
                  ) -> list[IncidentTimelineEntry]:
    """Return an incident's timeline in order."""
    get_incident(session=session, incident_id=incident_id)
    return list(session.scalars(select(IncidentTimelineEntry).where(
        IncidentTimelineEntry.incident_id == incident_id, IncidentTimelineEntry.id > after_id)
        .order_by(IncidentTimelineEntry.id).limit(limit)))


def list_incidents(*, session: Session, state: list[IncidentState] | None = None, model: str | None = None,
                   limit: int = 100, offset: int = 0) -> tuple[list[Incident], int]:
    """Return incidents, most recently active first, and the total count."""
    query = select(Incident)
    count = select(func.count()).select_from(Incident)
    if state:
        query = query.where(Incident.state.in_([s.value for s in state]))
        count = count.where(Incident.state.in_([s.value for s in state]))
    if model:
        query, count = query.where(Incident.model_name == model), count.where(Incident.model_name == model)
    rows = session.scalars(query.order_by(Incident.updated_at.desc(), Incident.id).limit(limit).offset(offset))
    return list(rows), int(session.scalar(count) or 0)


def incident_read(session: Session, incident: Incident) -> IncidentRead:
    """Present an incident with the ids of its alerts."""
    alert_ids = list(session.scalars(select(IncidentAlert.alert_id).where(IncidentAlert.incident_id == incident.id)
                                     .order_by(IncidentAlert.created_at, IncidentAlert.alert_id)))
    read = IncidentRead.model_validate(incident)
    read.alert_ids = alert_ids
    return read


def _label_incidents(session: Session, ids: list[str]) -> dict[str, str]:
    return {r.id: r.title for r in session.execute(select(Incident.id, Incident.title).where(Incident.id.in_(ids)))}


lineage.register_labeler(NodeKind.INCIDENT, _label_incidents)

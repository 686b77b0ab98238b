"""Raise (deduplicated by fingerprint), list, acknowledge and resolve alerts; every change is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from control_plane.alerts.models import Alert
from control_plane.alerts.schemas import SEVERITY_RANK, AlertCheck, AlertRaise, AlertState, Severity
from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, NotFound
from control_plane.incidents import service as incidents
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.registry.models import ModelVersion, RegisteredModel


def _version_id(session: Session, model_name: str, version: int) -> str | None:
    return session.scalar(
        select(ModelVersion.id).join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(RegisteredModel.name == model_name, ModelVersion.version == version)
    )


def active_by_fingerprint(*, session: Session, fingerprint: str) -> Alert | None:
    """Return the unresolved alert with this fingerprint, if any."""
    return session.scalar(select(Alert).where(Alert.active_fingerprint == fingerprint))


def raise_alert(*, session: Session, request: AlertRaise, actor: str) -> tuple[Alert, bool]:
    """Open an alert, or refresh the unresolved one with the same fingerprint; return (alert, created)."""
    now = utcnow()
    existing = active_by_fingerprint(session=session, fingerprint=request.fingerprint)
    if existing is not None:
        existing.last_seen_at = now
        existing.occurrences += 1
        existing.evidence = request.evidence
        # Severity only escalates while an alert is open; a calmer evaluation does not downgrade it.
        if SEVERITY_RANK[request.severity] > SEVERITY_RANK[Severity(existing.severity)]:
            existing.severity = request.severity.value
            audit.record(session, actor=actor, action="alert.escalate", resource=("alert", existing.id),
                         data={"severity": existing.severity})
            incidents.on_alert_escalated(session=session, alert=existing)
        session.flush()
        return existing, False
    alert = Alert(
        fingerprint=request.fingerprint, active_fingerprint=request.fingerprint, state=AlertState.OPEN.value,
        severity=request.severity.value, check=request.check.value, title=request.title,
        model_name=request.model_name, model_version=request.model_version,
        model_version_id=_version_id(session, request.model_name, request.model_version),
        deployment_id=request.deployment_id, rollout_id=request.rollout_id, monitor_id=request.monitor_id,
        feature=request.feature, evidence=request.evidence, occurrences=1, first_seen_at=now, last_seen_at=now,
    )
    session.add(alert)
    session.flush()
    if alert.model_version_id:
        lineage.link(session, (NodeKind.MODEL_VERSION, alert.model_version_id), (NodeKind.ALERT, alert.id), "alerted")
    if alert.deployment_id:
        lineage.link(session, (NodeKind.DEPLOYMENT, alert.deployment_id), (NodeKind.ALERT, alert.id), "alerted")
    audit.record(session, actor=actor, action="alert.open", resource=("alert", alert.id),
                 data={"fingerprint": alert.fingerprint, "check": alert.check, "severity": alert.severity,
                       "model": alert.model_name, "version": alert.model_version, "feature": alert.feature})
    incidents.correlate_alert(session=session, alert=alert)
    return alert, True


def get_alert(*, session: Session, alert_id: str) -> Alert:
    """Return an alert or raise NotFound."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id!r} not found")
    return alert


def _filtered(query: Select[Any], *, state: list[AlertState] | None, severity: list[Severity] | None,
              min_severity: Severity | None, model: str | None, version: int | None, check: AlertCheck | None,
              feature: str | None, deployment_id: str | None, since: datetime | None) -> Select[Any]:
    if state:
        query = query.where(Alert.state.in_([s.value for s in state]))
    if severity:
        query = query.where(Alert.severity.in_([s.value for s in severity]))
    if min_severity is not None:
        allowed = [s.value for s, rank in SEVERITY_RANK.items() if rank >= SEVERITY_RANK[min_severity]]
        query = query.where(Alert.severity.in_(allowed))
    if model:
        query = query.where(Alert.model_name == model)
    if version is not None:
        query = query.where(Alert.model_version == version)
    if check is not None:
        query = query.where(Alert.check == check.value)
    if feature:
        query = query.where(Alert.feature == feature)
    if deployment_id:
        query = query.where(Alert.deployment_id == deployment_id)
    if since is not None:
        query = query.where(Alert.last_seen_at >= since)
    return query


def list_alerts(
    *, session: Session, state: list[AlertState] | None = None, severity: list[Severity] | None = None,
    min_severity: Severity | None = None, model: str | None = None, version: int | None = None,
    check: AlertCheck | None = None, feature: str | None = None, deployment_id: str | None = None,
    since: datetime | None = None, limit: int = 100, offset: int = 0,
) -> tuple[list[Alert], int]:
    """Return matching alerts (most recently seen first) and the total count."""
    filters: dict[str, Any] = {"state": state, "severity": severity, "min_severity": min_severity, "model": model,
               "version": version, "check": check, "feature": feature, "deployment_id": deployment_id,
               "since": since}
    query = _filtered(select(Alert), **filters).order_by(Alert.last_seen_at.desc(), Alert.id)
    total = session.scalar(_filtered(select(func.count()).select_from(Alert), **filters))
    return list(session.scalars(query.limit(limit).offset(offset))), int(total or 0)


def acknowledge(*, session: Session, alert_id: str, actor: str, note: str = "") -> Alert:
    """Mark an open alert as acknowledged (idempotent for an already acknowledged one)."""
    alert = get_alert(session=session, alert_id=alert_id)
    if alert.state == AlertState.RESOLVED:
        raise Conflict(f"alert {alert_id!r} is resolved", state=alert.state)
    if alert.state == AlertState.ACKNOWLEDGED:
        return alert
    alert.state = AlertState.ACKNOWLEDGED.value
    alert.acknowledged_by, alert.acknowledged_at = actor, utcnow()
    session.flush()
    audit.record(session, actor=actor, action="alert.acknowledge", resource=("alert", alert.id), data={"note": note})
    return alert


def resolve(*, session: Session, alert_id: str, actor: str, note: str = "") -> Alert:
    """Resolve an alert; its fingerprint may then open a new one."""
    alert = get_alert(session=session, alert_id=alert_id)
    if alert.state == AlertState.RESOLVED:
        raise Conflict(f"alert {alert_id!r} is already resolved", state=alert.state)
    alert.state = AlertState.RESOLVED.value
    alert.active_fingerprint = None
    alert.resolved_by, alert.resolved_at, alert.resolution = actor, utcnow(), note or None
    session.flush()
    audit.record(session, actor=actor, action="alert.resolve", resource=("alert", alert.id), data={"note": note})
    return alert


def _label_alerts(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(Alert.id, Alert.check, Alert.feature).where(Alert.id.in_(ids)))
    return {r.id: f"{r.check}: {r.feature}" if r.feature else r.check for r in rows}


lineage.register_labeler(NodeKind.ALERT, _label_alerts)

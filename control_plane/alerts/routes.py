"""Alert routes: list with filters, get, acknowledge, resolve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.alerts import service
from control_plane.alerts.schemas import AlertCheck, AlertNote, AlertPage, AlertRead, AlertState, Severity
from control_plane.constraints import Name, ParamDateTime, ParamNonNegativeInt64, ParamPositiveInt32
from control_plane.deps import Reader, SessionDep, Writer

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("", response_model=AlertPage)
def list_alerts(
    session: SessionDep, _: Reader,
    state: Annotated[list[AlertState] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    min_severity: Severity | None = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    version: ParamPositiveInt32 | None = None,
    check: AlertCheck | None = None,
    feature: Annotated[str | None, Query(max_length=200)] = None,
    deployment_id: Annotated[str | None, Query(max_length=40)] = None,
    since: ParamDateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: ParamNonNegativeInt64 = 0,
) -> AlertPage:
    """List alerts, most recently seen first; repeat `state`/`severity` to match several."""
    items, total = service.list_alerts(
        session=session, state=state, severity=severity, min_severity=min_severity, model=model, version=version,
        check=check, feature=feature, deployment_id=deployment_id, since=since, limit=limit, offset=offset,
    )
    return AlertPage(items=[AlertRead.model_validate(a) for a in items], total=total)


@router.get("/{alert_id}", response_model=AlertRead)
def get_alert(alert_id: Name, session: SessionDep, _: Reader) -> AlertRead:
    """Return one alert with its evidence."""
    return AlertRead.model_validate(service.get_alert(session=session, alert_id=alert_id))


@router.post("/{alert_id}/acknowledge", response_model=AlertRead)
def acknowledge(alert_id: Name, session: SessionDep, principal: Writer, body: AlertNote | None = None) -> AlertRead:
    """Acknowledge an open alert."""
    alert = service.acknowledge(session=session, alert_id=alert_id, actor=principal.actor,
                                note=body.note if body else "")
    return AlertRead.model_validate(alert)


@router.post("/{alert_id}/resolve", response_model=AlertRead)
def resolve(alert_id: Name, session: SessionDep, principal: Writer, body: AlertNote | None = None) -> AlertRead:
    """Resolve an alert."""
    alert = service.resolve(session=session, alert_id=alert_id, actor=principal.actor, note=body.note if body else "")
    return AlertRead.model_validate(alert)

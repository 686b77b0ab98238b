"""Incident routes: list, read, open, move, timeline (agents post notes and RCA reports), correlation rule."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from control_plane.constraints import Name
from control_plane.deps import Admin, Proposer, Reader, SessionDep, Writer
from control_plane.errors import MAX_DB_INT
from control_plane.incidents import service
from control_plane.incidents.schemas import (
    CorrelationRule,
    IncidentCreate,
    IncidentPage,
    IncidentRead,
    IncidentState,
    IncidentTransition,
    TimelineEntryRead,
    TimelinePost,
)

router = APIRouter(prefix="/incidents", tags=["incidents"])


@router.get("", response_model=IncidentPage)
def list_incidents(
    session: SessionDep, _: Reader,
    state: Annotated[list[IncidentState] | None, Query()] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> IncidentPage:
    """List incidents, most recently active first."""
    items, total = service.list_incidents(session=session, state=state, model=model, limit=limit, offset=offset)
    return IncidentPage(items=[service.incident_read(session, i) for i in items], total=total)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=IncidentRead)
def create_incident(body: IncidentCreate, session: SessionDep, caller: Writer) -> IncidentRead:
    """Open an incident by hand (alerts normally open them through correlation)."""
    return service.incident_read(session, service.create_incident(session=session, request=body, actor=caller.actor))


@router.get("/correlation-rule", response_model=CorrelationRule)
def get_rule(session: SessionDep, _: Reader) -> CorrelationRule:
    """Return the rule that groups alerts into incidents."""
    return service.get_rule(session=session)


@router.put("/correlation-rule", response_model=CorrelationRule)
def set_rule(body: CorrelationRule, session: SessionDep, caller: Admin) -> CorrelationRule:
    """Replace the correlation rule (applies to alerts raised from now on)."""
    return service.set_rule(session=session, rule=body, actor=caller.actor)


@router.get("/{incident_id}", response_model=IncidentRead)
def get_incident(incident_id: Name, session: SessionDep, _: Reader) -> IncidentRead:
    """Return one incident with its alert ids."""
    return service.incident_read(session, service.get_incident(session=session, incident_id=incident_id))


@router.post("/{incident_id}/state", response_model=IncidentRead)
def move_incident(incident_id: Name, body: IncidentTransition, session: SessionDep, caller: Writer) -> IncidentRead:
    """Move an incident (open, investigating, mitigating, resolved; dismissed needs a reason)."""
    incident = service.transition(session=session, incident_id=incident_id, state=body.state, reason=body.reason,
                                  actor=caller.actor)
    return service.incident_read(session, incident)


@router.get("/{incident_id}/timeline", response_model=list[TimelineEntryRead])
def list_timeline(
    incident_id: Name, session: SessionDep, _: Reader,
    after_id: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[TimelineEntryRead]:
    """Return the incident's timeline in order."""
    entries = service.list_timeline(session=session, incident_id=incident_id, after_id=after_id, limit=limit)
    return [TimelineEntryRead.model_validate(e) for e in entries]


@router.post("/{incident_id}/timeline", status_code=status.HTTP_201_CREATED, response_model=TimelineEntryRead)
def post_timeline_entry(incident_id: Name, body: TimelinePost, session: SessionDep, caller: Proposer
                        ) -> TimelineEntryRead:
    """Add a triage note, RCA report or comment; every evidence reference must point at a real resource."""
    entry = service.post_entry(session=session, incident_id=incident_id, post=body, actor=caller.actor)
    return TimelineEntryRead.model_validate(entry)

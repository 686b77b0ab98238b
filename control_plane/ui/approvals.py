"""The approval queue (four eyes shown and enforced), incidents with their timelines, and live updates over SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.responses import Response

from control_plane.approvals import service as approvals
from control_plane.approvals.schemas import ProposalRead, ProposalState
from control_plane.auth.roles import Scope
from control_plane.deps import SessionDep
from control_plane.drift import service as drift
from control_plane.drift.routes import baseline_cache
from control_plane.drift.selection import DriftConfig
from control_plane.errors import Invalid, ServiceUnavailable
from control_plane.events import service as events
from control_plane.events.hub import EventHub, stream_events
from control_plane.incidents import service as incidents
from control_plane.incidents.schemas import IncidentState, TimelineEntryRead
from control_plane.ui.auth import CheckedForm, CurrentViewer, Viewer
from control_plane.ui.charts import Chart, psi_bars
from control_plane.ui.rendering import redirect, render

router = APIRouter(prefix="/ui", include_in_schema=False)
ProposalId = Annotated[str, Path(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]
IncidentId = Annotated[str, Path(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]
REASON_MAX = 2000
DRIFT_LOOKBACK_S = 24 * 3600.0


@dataclass(frozen=True)
class QueueItem:
    """A pending proposal as the approver sees it: the action, why, and whether this user may decide."""

    proposal: ProposalRead
    incident_title: str | None
    hypotheses: list[dict[str, Any]]
    charts: list[Chart]
    may_decide: bool
    why_not: str
    expires_in: str


def _expires_in(moment: datetime) -> str:
    seconds = int(((moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "expired"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60}s"


def _decision_rights(viewer: Viewer, proposal: ProposalRead) -> tuple[bool, str]:
    if not viewer.can(Scope.APPROVE):
        return False, "Only approvers and admins decide proposals."
    if proposal.proposer == viewer.principal.actor or proposal.proposer.endswith(f":{viewer.principal.name}"):
        return False, "You proposed this: four eyes means another approver decides."
    return True, ""


def _latest_rca(session: Session, incident_id: str) -> list[dict[str, Any]]:
    entries = incidents.list_timeline(session=session, incident_id=incident_id)
    reports = [e.body for e in entries if e.kind == "rca_report"]
    hypotheses: list[dict[str, Any]] = reports[-1].get("hypotheses", []) if reports else []
    return sorted(hypotheses, key=lambda h: int(h.get("rank", 99)))


def _evidence_charts(request: Request, session: Session, hypotheses: list[dict[str, Any]]) -> list[Chart]:
    """Draw the drift evidence the top hypotheses cite (at most two reports)."""
    charts: list[Chart] = []
    drawn: set[str] = set()
    until = datetime.now(UTC).timestamp()
    for hypothesis in hypotheses[:2]:
        for ref in hypothesis.get("evidence", []):
            query = ref.get("query", {})
            key = json.dumps(query, sort_keys=True, default=str)
            if ref.get("kind") != "drift_report" or len(charts) >= 2 or key in drawn:
                continue
            drawn.add(key)
            scope = drift.WindowScope(str(query.get("model", "")), int(query.get("version", 0) or 0),
                                      until - DRIFT_LOOKBACK_S, until, query.get("device_group"),
                                      query.get("rollout_id"), query.get("deployment_id"))
            report = drift.drift_report(session=session, baselines=baseline_cache(request), scope=scope,
                                        bucket_seconds=DRIFT_LOOKBACK_S, config=DriftConfig())
            chart = psi_bars(report)
            if chart is not None:
                charts.append(chart)
    return charts


def queue_items(request: Request, session: Session, viewer: Viewer) -> list[QueueItem]:
    """Return the pending proposals, oldest first, with the evidence an approver needs."""
    pending, _ = approvals.list_proposals(session=session, state=[ProposalState.PENDING], limit=100)
    items = []
    for row in reversed(pending):
        proposal = ProposalRead.model_validate(row)
        title, hypotheses = None, []
        if proposal.incident_id:
            title = incidents.get_incident(session=session, incident_id=proposal.incident_id).title
            hypotheses = _latest_rca(session, proposal.incident_id)
        may, why = _decision_rights(viewer, proposal)
        items.append(QueueItem(proposal, title, hypotheses, _evidence_charts(request, session, hypotheses), may, why,
                               _expires_in(proposal.expires_at)))
    return items


@router.get("/approvals")
def approvals_page(request: Request, viewer: CurrentViewer, session: SessionDep, done: str | None = None) -> Response:
    """Show the approval queue and the history of decided proposals with their outcomes."""
    decided, _ = approvals.list_proposals(session=session, state=[s for s in ProposalState
                                                                  if s != ProposalState.PENDING], limit=50)
    return render(request, "approvals.html", {
        "viewer": viewer, "title": "Approvals", "items": queue_items(request, session, viewer),
        "rendered_at": events.head_seq(session),
        "history": [ProposalRead.model_validate(p) for p in decided],
        "done": done if done in ("approved", "rejected") else None})


@router.get("/approvals/queue")
def approvals_queue(request: Request, viewer: CurrentViewer, session: SessionDep) -> Response:
    """Render only the pending list (htmx swaps it in when the event stream says a proposal changed)."""
    return render(request, "_queue.html", {"viewer": viewer, "items": queue_items(request, session, viewer)})


@router.post("/approvals/{proposal_id}/{decision}")
def decide(request: Request, proposal_id: ProposalId, decision: Literal["approve", "reject"], viewer: CurrentViewer,
           form: CheckedForm, session: SessionDep) -> Response:
    """Approve or reject through the approvals service, which checks four eyes and staleness again."""
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > REASON_MAX or "\x00" in reason:
        raise Invalid(f"a reason of 1 to {REASON_MAX} characters is required", field="reason")
    approvals.decide(session=session, proposal_id=proposal_id, approve=decision == "approve", reason=reason,
                     principal=viewer.principal)
    response = redirect(f"/ui/approvals?done={'approved' if decision == 'approve' else 'rejected'}")
    executor = getattr(request.app.state, "approval_executor", None)

    async def wake() -> None:  # after the commit: this replica's executor starts at once
        if executor is not None:
            executor.wake.set()

    response.background = BackgroundTask(wake)
    return response


@router.get("/incidents")
def incidents_page(request: Request, viewer: CurrentViewer, session: SessionDep,
                   state: Annotated[IncidentState | None, Query()] = None,
                   model: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """List incidents, most recently active first, filtered by state and model."""
    rows, total = incidents.list_incidents(session=session, state=[state] if state else None, model=model or None,
                                           limit=200)
    return render(request, "incidents.html", {
        "viewer": viewer, "title": "Incidents", "incidents": [incidents.incident_read(session, i) for i in rows],
        "total": total, "state": state.value if state else "", "model": model or "",
        "states": [s.value for s in IncidentState]})


@router.get("/incidents/{incident_id}")
def incident_page(request: Request, incident_id: IncidentId, viewer: CurrentViewer, session: SessionDep) -> Response:
    """Show one incident's timeline: alerts, triage, RCA, proposals, decisions, executions, verification."""
    incident = incidents.incident_read(session, incidents.get_incident(session=session, incident_id=incident_id))
    timeline = [TimelineEntryRead.model_validate(e) for e in incidents.list_timeline(session=session,
                                                                                     incident_id=incident_id)]
    proposals, _ = approvals.list_proposals(session=session, incident_id=incident_id, limit=50)
    return render(request, "incident.html", {
        "viewer": viewer, "title": f"Incident {incident.id}", "incident": incident, "timeline": timeline,
        "proposals": [ProposalRead.model_validate(p) for p in proposals]})


@router.get("/events")
async def ui_events(request: Request, viewer: CurrentViewer,
                    resource_type: Annotated[list[str] | None, Query(max_length=10)] = None,
                    after: Annotated[str | None, Query(max_length=20)] = None,
                    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
                    ) -> Response:
    """Tell an open page that something it shows changed (an SSE ``change`` event; the page re-fetches).

    A page passes the event id it was rendered at (``after``), so a change between rendering and connecting is
    not lost; the browser's reconnects resume from Last-Event-ID.
    """
    hub: EventHub | None = getattr(request.app.state, "event_hub", None)
    if hub is None:
        raise ServiceUnavailable("the event stream is not running")
    wanted = [t for t in resource_type or [] if t.replace("_", "").isalnum() and len(t) <= 50]
    event_filter = events.EventFilter(viewer.principal.scopes, wanted)
    database = request.app.state.database

    def start() -> int:
        with database.transaction(write=False) as session:
            head = events.head_seq(session)
        cursor = events.parse_cursor(last_event_id if last_event_id is not None else after, head)
        return head if cursor is None else cursor

    cursor = await run_in_threadpool(start)

    async def changes() -> AsyncIterator[dict[str, str]]:
        async for batch in stream_events(hub, event_filter, cursor):  # one nudge per batch: the page re-fetches
            yield {"id": str(batch[-1].seq), "event": "change",
                   "data": ",".join(sorted({event.resource_type for event in batch}))}

    return EventSourceResponse(changes(), ping=15, headers={"Cache-Control": "no-store"})

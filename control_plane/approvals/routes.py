"""Approval routes: propose (agents too), decide (approvers, four eyes), verify, quarantines, retrain requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import select
from starlette.background import BackgroundTask

from control_plane.approvals import service
from control_plane.approvals.models import DeviceQuarantine, RetrainRequest
from control_plane.approvals.schemas import (
    ActionKind,
    Decision,
    ProposalCreate,
    ProposalPage,
    ProposalRead,
    ProposalState,
    QuarantineRead,
    RetrainRequestRead,
    VerificationCreate,
)
from control_plane.audit import service as audit
from control_plane.constraints import Name
from control_plane.deps import Approver, Proposer, Reader, SessionDep, json_response
from control_plane.errors import NotFound

router = APIRouter(tags=["approvals"])


def _wake_executor(request: Request) -> BackgroundTask:
    # Runs after the response, i.e. after the approval committed: this replica's executor starts at once.
    executor = getattr(request.app.state, "approval_executor", None)

    async def wake() -> None:
        if executor is not None:
            executor.wake.set()

    return BackgroundTask(wake)


@router.post("/proposals", status_code=status.HTTP_201_CREATED, response_model=ProposalRead)
def create_proposal(body: ProposalCreate, session: SessionDep, caller: Proposer) -> Response:
    """Propose an action (201; 200 with the existing proposal when the idempotency key repeats)."""
    proposal, created = service.create(session=session, request=body, principal=caller)
    return json_response(ProposalRead.model_validate(proposal), 201 if created else 200)


@router.get("/proposals", response_model=ProposalPage)
def list_proposals(
    session: SessionDep, _: Reader,
    state: Annotated[list[ProposalState] | None, Query()] = None,
    incident_id: Annotated[str | None, Query(max_length=40)] = None,
    kind: ActionKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ProposalPage:
    """List proposals, newest first (the approval queue is state=pending)."""
    items, total = service.list_proposals(session=session, state=state, incident_id=incident_id, kind=kind,
                                          limit=limit, offset=offset)
    return ProposalPage(items=[ProposalRead.model_validate(p) for p in items], total=total)


@router.get("/proposals/{proposal_id}", response_model=ProposalRead)
def get_proposal(proposal_id: Name, session: SessionDep, _: Reader) -> ProposalRead:
    """Return one proposal with what its approver saw and what happened."""
    return ProposalRead.model_validate(service.get(session=session, proposal_id=proposal_id))


@router.post("/proposals/{proposal_id}/approve", response_model=ProposalRead)
def approve(proposal_id: Name, body: Decision, request: Request, session: SessionDep, caller: Approver) -> Response:
    """Approve (never your own proposal); preconditions are re-checked and a stale proposal is a 409."""
    proposal = service.decide(session=session, proposal_id=proposal_id, approve=True, reason=body.reason,
                              principal=caller)
    response = json_response(ProposalRead.model_validate(proposal))
    response.background = _wake_executor(request)
    return response


@router.post("/proposals/{proposal_id}/reject", response_model=ProposalRead)
def reject(proposal_id: Name, body: Decision, session: SessionDep, caller: Approver) -> ProposalRead:
    """Reject with a reason."""
    proposal = service.decide(session=session, proposal_id=proposal_id, approve=False, reason=body.reason,
                              principal=caller)
    return ProposalRead.model_validate(proposal)


@router.post("/proposals/{proposal_id}/verification", response_model=ProposalRead)
def record_verification(proposal_id: Name, body: VerificationCreate, session: SessionDep, caller: Proposer
                        ) -> ProposalRead:
    """Record whether the executed action helped: recovered, not_recovered or unknown."""
    return ProposalRead.model_validate(service.verify(session=session, proposal_id=proposal_id, request=body,
                                                      principal=caller))


@router.get("/quarantines", response_model=list[QuarantineRead])
def list_quarantines(session: SessionDep, _: Reader) -> list[QuarantineRead]:
    """List quarantined devices."""
    rows = session.scalars(select(DeviceQuarantine).order_by(DeviceQuarantine.created_at))
    return [QuarantineRead.model_validate(q) for q in rows]


@router.delete("/quarantines/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
def release_quarantine(device_id: Name, session: SessionDep, caller: Approver) -> Response:
    """Release a quarantined device (an approver's decision)."""
    quarantine = session.get(DeviceQuarantine, device_id)
    if quarantine is None:
        raise NotFound(f"device {device_id!r} is not quarantined")
    session.delete(quarantine)
    session.flush()
    audit.record(session, actor=caller.actor, action="device.release", resource=("device", device_id),
                 data={"proposal_id": quarantine.proposal_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/retrain-requests", response_model=list[RetrainRequestRead])
def list_retrain_requests(session: SessionDep, _: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
                          ) -> list[RetrainRequestRead]:
    """List recorded retraining requests, newest first."""
    rows = session.scalars(select(RetrainRequest).order_by(RetrainRequest.created_at.desc()).limit(limit))
    return [RetrainRequestRead.model_validate(r) for r in rows]

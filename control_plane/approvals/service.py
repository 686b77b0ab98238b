"""Propose, decide (four eyes, fresh preconditions), expire and verify; execution lives in execution.py."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from control_plane.approvals.executors import executor_for
from control_plane.approvals.models import Proposal
from control_plane.approvals.schemas import (
    Action,
    ProposalCreate,
    ProposalState,
    VerificationCreate,
)
from control_plane.audit import service as audit
from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Forbidden, Invalid, NotFound
from control_plane.incidents import evidence
from control_plane.incidents import service as incidents
from control_plane.incidents.schemas import TimelineKind
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.prompts.models import AgentRun

ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
SYSTEM_ACTOR = "system:approvals"


def action_of(proposal: Proposal) -> Action:
    """Rebuild the typed action from the stored kind and parameters."""
    return ACTION_ADAPTER.validate_python({"kind": proposal.kind, **proposal.params})


def changed_preconditions(assumed: dict[str, Any], now: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return {key: {"was": ..., "now": ...}} for every precondition that moved."""
    return {key: {"was": assumed.get(key), "now": now.get(key)} for key in sorted(set(assumed) | set(now))
            if assumed.get(key) != now.get(key)}


def timeline(session: Session, proposal: Proposal, kind: TimelineKind, author: str, body: dict[str, Any],
             agent_run_id: str | None = None) -> None:
    """Put a proposal step on its incident's timeline (when it has one)."""
    if proposal.incident_id:
        incidents.add_entry(session, proposal.incident_id, kind, author,
                            {"proposal_id": proposal.id, "action": proposal.kind, **body}, agent_run_id)


def _request_hash(request: ProposalCreate) -> str:
    body = request.model_dump(mode="json", exclude={"idempotency_key", "expires_in_seconds"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def create(*, session: Session, request: ProposalCreate, principal: Principal) -> tuple[Proposal, bool]:
    """Record a pending proposal with its precondition snapshot; return (proposal, created).

    The same idempotency key with the same request returns the existing proposal; with another request, 409.
    """
    digest = _request_hash(request)
    if request.idempotency_key:
        existing = session.scalar(select(Proposal).where(Proposal.idempotency_key == request.idempotency_key))
        if existing is not None:
            if existing.request_hash != digest or existing.proposer_name != principal.name:
                raise Conflict("idempotency key already used for a different proposal", proposal_id=existing.id)
            return existing, False
    action = request.action
    executor = executor_for(action)
    if request.incident_id:
        incidents.get_incident(session=session, incident_id=request.incident_id)  # 404 for a missing incident
    if request.agent_run_id and session.get(AgentRun, request.agent_run_id) is None:
        raise Invalid(f"agent run {request.agent_run_id!r} not found", field="agent_run_id")
    evidence.check_refs(session, [(f"evidence[{i}]", ref) for i, ref in enumerate(request.evidence)])
    preconditions = executor.snapshot(session, action)  # NotFound (404) for a missing target
    executor.precheck(action, preconditions)  # Conflict (409) for an action that cannot apply now
    target_type, target_id = executor.target(action)
    now = utcnow()
    proposal = Proposal(
        kind=action.kind, params=action.model_dump(mode="json", exclude={"kind"}), target_type=target_type,
        target_id=target_id, incident_id=request.incident_id,
        evidence=[ref.model_dump(mode="json", exclude_none=True) for ref in request.evidence],
        expected_effect=request.expected_effect, risk=request.risk.value,
        expires_at=now + timedelta(seconds=request.expires_in_seconds), proposer=principal.actor,
        proposer_name=principal.name, proposer_token_id=principal.token_id, agent_run_id=request.agent_run_id,
        idempotency_key=request.idempotency_key or f"auto-{secrets.token_hex(12)}", request_hash=digest,
        preconditions=preconditions, state=ProposalState.PENDING.value, attempts=0, updated_at=now)
    session.add(proposal)
    session.flush()
    if proposal.incident_id:
        lineage.link(session, (NodeKind.INCIDENT, proposal.incident_id), (NodeKind.PROPOSAL, proposal.id), "proposed")
    audit.record(session, actor=principal.actor, action="proposal.create", resource=("proposal", proposal.id),
                 data={"kind": proposal.kind, "target": f"{target_type}:{target_id}", "risk": proposal.risk,
                       "incident_id": proposal.incident_id, "preconditions": preconditions,
                       "idempotency_key": proposal.idempotency_key, "expires_at": proposal.expires_at.isoformat()})
    timeline(session, proposal, TimelineKind.PROPOSAL, principal.actor,
             {"params": proposal.params, "expected_effect": proposal.expected_effect, "risk": proposal.risk,
              "evidence": proposal.evidence, "preconditions": preconditions}, request.agent_run_id)
    return proposal, True


def get(*, session: Session, proposal_id: str, lock: bool = False) -> Proposal:
    """Return a proposal (locked for update when asked) or raise NotFound."""
    query = select(Proposal).where(Proposal.id == proposal_id)
    proposal = session.scalar(query.with_for_update() if lock else query)
    if proposal is None:
        raise NotFound(f"proposal {proposal_id!r} not found")
    return proposal


def decide(*, session: Session, proposal_id: str, approve: bool, reason: str, principal: Principal) -> Proposal:
    """Approve or reject under the row lock; approval re-checks every precondition first."""
    if Scope.APPROVE not in principal.scopes:
        raise Forbidden("only an approver or admin may decide a proposal", required_scope=Scope.APPROVE.value)
    proposal = get(session=session, proposal_id=proposal_id, lock=True)
    if principal.name == proposal.proposer_name or principal.token_id == proposal.proposer_token_id:
        raise Forbidden("four eyes: the proposer may not decide its own proposal", proposer=proposal.proposer)
    if proposal.state != ProposalState.PENDING:
        raise Conflict(f"proposal {proposal_id} is already {proposal.state}", state=proposal.state,
                       decided_by=proposal.decided_by)
    now = utcnow()
    if proposal.expires_at <= now:
        raise Conflict(f"proposal {proposal_id} expired at {proposal.expires_at.isoformat()}", state="expired")
    if approve:
        current = executor_for(action_of(proposal)).snapshot(session, action_of(proposal))
        changed = changed_preconditions(proposal.preconditions, current)
        if changed:
            summary = ", ".join(f"{k}: {v['was']!r} -> {v['now']!r}" for k, v in changed.items())
            raise Conflict(f"stale proposal: the world changed since it was made ({summary})", changed=changed)
    state = ProposalState.APPROVED if approve else ProposalState.REJECTED
    proposal.state = state.value
    proposal.decided_by, proposal.decided_at, proposal.decision_reason = principal.actor, now, reason
    proposal.updated_at = now
    session.flush()
    audit.record(session, actor=principal.actor, action=f"proposal.{state.value}", resource=("proposal", proposal.id),
                 data={"kind": proposal.kind, "reason": reason, "idempotency_key": proposal.idempotency_key,
                       "preconditions_seen": proposal.preconditions})
    timeline(session, proposal, TimelineKind.DECISION, principal.actor, {"decision": state.value, "reason": reason})
    return proposal


def expire_due(*, session: Session, limit: int = 500) -> int:
    """Expire pending proposals past their expiry; return how many."""
    now = utcnow()
    query = select(Proposal).where(Proposal.state == ProposalState.PENDING.value, Proposal.expires_at <= now)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    due = list(session.scalars(query.order_by(Proposal.expires_at).limit(limit)))
    for proposal in due:
        proposal.state, proposal.updated_at = ProposalState.EXPIRED.value, now
        audit.record(session, actor=SYSTEM_ACTOR, action="proposal.expired", resource=("proposal", proposal.id),
                     data={"kind": proposal.kind, "expires_at": proposal.expires_at.isoformat()})
        timeline(session, proposal, TimelineKind.DECISION, SYSTEM_ACTOR, {"decision": "expired"})
    session.flush()
    return len(due)


def verify(*, session: Session, proposal_id: str, request: VerificationCreate, principal: Principal) -> Proposal:
    """Record whether the executed action helped (again later, if the picture changes)."""
    proposal = get(session=session, proposal_id=proposal_id, lock=True)
    if proposal.state != ProposalState.EXECUTED:
        raise Conflict(f"proposal {proposal_id} is {proposal.state}; only an executed action can be verified",
                       state=proposal.state)
    if request.agent_run_id and session.get(AgentRun, request.agent_run_id) is None:
        raise Invalid(f"agent run {request.agent_run_id!r} not found", field="agent_run_id")
    evidence.check_refs(session, [(f"evidence[{i}]", ref) for i, ref in enumerate(request.evidence)])
    now = utcnow()
    proposal.verification, proposal.verified_by, proposal.verified_at = request.outcome.value, principal.actor, now
    proposal.verification_note, proposal.updated_at = request.note, now
    session.flush()
    refs = [ref.model_dump(mode="json", exclude_none=True) for ref in request.evidence]
    audit.record(session, actor=principal.actor, action="proposal.verified", resource=("proposal", proposal.id),
                 data={"outcome": request.outcome.value, "note": request.note, "evidence": refs})
    timeline(session, proposal, TimelineKind.VERIFICATION, principal.actor,
             {"outcome": request.outcome.value, "note": request.note, "evidence": refs}, request.agent_run_id)
    return proposal


def list_proposals(*, session: Session, state: list[ProposalState] | None = None, incident_id: str | None = None,
                   kind: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[Proposal], int]:
    """Return proposals, newest first, and the total count."""
    conditions: list[ColumnElement[bool]] = []
    if state:
        conditions.append(Proposal.state.in_([s.value for s in state]))
    if incident_id:
        conditions.append(Proposal.incident_id == incident_id)
    if kind:
        conditions.append(Proposal.kind == kind)
    rows = session.scalars(select(Proposal).where(*conditions).order_by(Proposal.created_at.desc(), Proposal.id)
                           .limit(limit).offset(offset))
    total = session.scalar(select(func.count()).select_from(Proposal).where(*conditions))
    return list(rows), int(total or 0)


def _label_proposals(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(Proposal.id, Proposal.kind, Proposal.target_id).where(Proposal.id.in_(ids)))
    return {r.id: f"{r.kind} {r.target_id}" for r in rows}


lineage.register_labeler(NodeKind.PROPOSAL, _label_proposals)

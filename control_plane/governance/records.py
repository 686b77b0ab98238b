"""Shared look-ups of the record: audit entries behind a resource, and the approval proposals that acted on it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import String, and_, cast, or_, select
from sqlalchemy.orm import Session

from control_plane.approvals.models import Proposal
from control_plane.audit.models import AuditEntry
from control_plane.governance.schemas import AuditRef, HumanDecision

# Executors record "proposal <id>: <decision reason>" as the reason of the change they make (ExecutionContext).
_PROPOSAL_REASON = re.compile(r"^proposal (prop_[0-9a-f]{1,40}):")
# Bounds on what one card or decision record reads, so a long-lived model cannot make a request unbounded.
MAX_AUDIT_PER_RESOURCE = 200
MAX_IDS_PER_QUERY = 200


def audit_entries(session: Session, resources: Iterable[tuple[str, str]],
                  actions: Iterable[str] | None = None) -> dict[tuple[str, str], list[AuditEntry]]:
    """Return the audit entries of each (resource type, id), oldest first, optionally of some actions only."""
    wanted = list(dict.fromkeys(resources))[:MAX_IDS_PER_QUERY]
    found: dict[tuple[str, str], list[AuditEntry]] = {key: [] for key in wanted}
    if not wanted:
        return found
    query = select(AuditEntry).where(or_(*[and_(AuditEntry.resource_type == kind, AuditEntry.resource_id == rid)
                                           for kind, rid in wanted]))
    if actions is not None:
        query = query.where(AuditEntry.action.in_(list(actions)))
    for entry in session.scalars(query.order_by(AuditEntry.seq).limit(MAX_AUDIT_PER_RESOURCE * len(wanted))):
        bucket = found[(entry.resource_type, entry.resource_id)]
        if len(bucket) < MAX_AUDIT_PER_RESOURCE:
            bucket.append(entry)
    return found


def ref(entry: AuditEntry) -> AuditRef:
    """Present an audit entry as a reference (sequence number, time, actor, action)."""
    return AuditRef(seq=entry.seq, ts=entry.ts, actor=entry.actor, action=entry.action)


def data_of(entry: AuditEntry) -> dict[str, Any]:
    """Return the ``data`` an entry's hashed body recorded."""
    data = json.loads(entry.body).get("data")
    return data if isinstance(data, dict) else {}


def proposal_id_in(reason: Any) -> str | None:
    """Return the proposal id an executor wrote at the start of a change's reason, if any."""
    match = _PROPOSAL_REASON.match(reason) if isinstance(reason, str) else None
    return match.group(1) if match else None


def proposals_by_id(session: Session, ids: Iterable[str]) -> list[Proposal]:
    """Return the named proposals, oldest first."""
    wanted = list(dict.fromkeys(ids))[:MAX_IDS_PER_QUERY]
    if not wanted:
        return []
    return list(session.scalars(select(Proposal).where(Proposal.id.in_(wanted)).order_by(Proposal.created_at)))


def proposals_touching(session: Session, *, targets: Iterable[tuple[str, str]] = (),
                       incident_ids: Iterable[str] = (), result_mentions: Iterable[str] = ()) -> list[Proposal]:
    """Return proposals aimed at any target, raised for any incident, or whose recorded result names an id."""
    clauses = [and_(Proposal.target_type == kind, Proposal.target_id == tid)
               for kind, tid in list(dict.fromkeys(targets))[:MAX_IDS_PER_QUERY]]
    incidents = list(dict.fromkeys(incident_ids))[:MAX_IDS_PER_QUERY]
    if incidents:
        clauses.append(Proposal.incident_id.in_(incidents))
    # An executor's result names what it created (e.g. rollback_rollout_id): text search works on JSON and JSONB.
    result_text = cast(Proposal.result, String)
    clauses += [result_text.contains(f'"{mention}"', autoescape=True)
                for mention in list(dict.fromkeys(result_mentions))[:50]]
    if not clauses:
        return []
    return list(session.scalars(select(Proposal).where(or_(*clauses)).order_by(Proposal.created_at)
                                .limit(MAX_AUDIT_PER_RESOURCE)))


def human_decision(proposal: Proposal, audit: list[AuditEntry]) -> HumanDecision:
    """Present a proposal as the human decision it records, with its audit trail."""
    return HumanDecision(
        proposal_id=proposal.id, kind=proposal.kind, target=f"{proposal.target_type}:{proposal.target_id}",
        incident_id=proposal.incident_id, state=proposal.state, proposer=proposal.proposer,
        proposed_at=proposal.created_at, decided_by=proposal.decided_by, decided_at=proposal.decided_at,
        decision_reason=proposal.decision_reason, executed_at=proposal.executed_at, result=proposal.result,
        verification=proposal.verification, verified_by=proposal.verified_by, audit=[ref(e) for e in audit])


def decisions_for(session: Session, proposals: list[Proposal]) -> list[HumanDecision]:
    """Present proposals with their audit trails (one query for all of them)."""
    unique = list({p.id: p for p in proposals}.values())
    trails = audit_entries(session, [("proposal", p.id) for p in unique])
    return [human_decision(p, trails.get(("proposal", p.id), [])) for p in unique]


def json_object(text: str | None) -> dict[str, Any] | None:
    """Return the JSON object stored as text (a device event's payload), or None when it is not one."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def text_or_none(value: Any) -> str | None:
    """Return a non-empty string as is, anything else as None."""
    return value if isinstance(value, str) and value else None

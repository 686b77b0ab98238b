"""Remediation nodes: plan (pure), propose (idempotent), wait for execution (interrupt), verify (idempotent)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from langgraph.types import interrupt

from agents.remediation.actions import judge_recovery, plan_action
from agents.remediation.state import RemediationState
from agents.runs import Deps
from control_plane.approvals.schemas import ProposalState, VerificationCreate

DONE_STATES = {ProposalState.REJECTED.value, ProposalState.EXPIRED.value, ProposalState.FAILED.value}


def plan(state: RemediationState, deps: Deps) -> dict[str, Any]:
    """Choose the action that fits the top cause and its scope (no side effect)."""
    top = state["findings"][0] if state["findings"] else None
    body = None if top is None else plan_action(top, incident_id=state["incident_id"], now=deps.clock(),
                                                lookback_hours=deps.lookback_hours, attempt=state.get("attempt", 0))
    return {"proposal_body": body, "outcome": "monitor" if body is None else "planned"}


def after_plan(state: RemediationState) -> Literal["propose", "__end__"]:
    """Stop when monitoring is the right action."""
    return "propose" if state.get("proposal_body") else "__end__"


def propose(state: RemediationState, deps: Deps) -> dict[str, Any]:
    """Queue the proposal; the idempotency key makes a replay return the same one."""
    result = deps.tools.propose.propose_action(state["proposal_body"] or {})
    if result.status != "approval_required" and "idempotency key already used" in (result.error or ""):
        # The incident's action was proposed already with other parameters (a retrain's window moved on) and was
        # decided: a person saw it; the agent does not queue it again.
        return {"outcome": "already_proposed"}
    if result.status != "approval_required":
        raise RuntimeError(f"proposal refused: {result.error}")
    return {"proposal_id": result.data["id"], "proposal_state": result.data["state"], "outcome": "proposed"}


def after_propose(state: RemediationState) -> Literal["await_execution", "__end__"]:
    """Wait for the decision on a new proposal; stop when the incident's action was proposed before."""
    return "await_execution" if state.get("outcome") == "proposed" else "__end__"


def await_execution(state: RemediationState, deps: Deps) -> dict[str, Any]:
    """Pause until the worker says the proposal moved; then read its state from the API (not from the resume)."""
    proposal = deps.client.get_proposal(state["proposal_id"])  # a read: safe to repeat when the node replays
    if proposal.state.value in DONE_STATES | {ProposalState.EXECUTED.value}:
        return {"proposal_state": proposal.state.value}
    interrupt({"waiting_for": "proposal", "proposal_id": state["proposal_id"]})
    proposal = deps.client.get_proposal(state["proposal_id"])
    return {"proposal_state": proposal.state.value}


def after_wait(state: RemediationState) -> Literal["verify", "await_execution", "__end__"]:
    """Verify after execution, stop after a refusal, otherwise keep waiting."""
    if state["proposal_state"] == ProposalState.EXECUTED.value:
        return "verify"
    return "__end__" if state["proposal_state"] in DONE_STATES else "await_execution"


def verify(state: RemediationState, deps: Deps) -> dict[str, Any]:
    """Judge recovery from windows that closed after execution; record it once on the proposal (and incident)."""
    proposal = deps.client.get_proposal(state["proposal_id"])
    if proposal.verification is not None:
        return {"outcome": "verified", "verification": proposal.verification.value,
                "verification_note": proposal.verification_note or ""}
    executed_at = proposal.executed_at.timestamp() if proposal.executed_at else deps.clock()
    # A rollback has taken effect only when its rollout has finished: windows from devices still on the bad
    # version in between are not evidence against the rollback.
    rollback_id = (proposal.result or {}).get("rollback_rollout_id")
    if rollback_id:
        rollout = deps.client.read_json(f"/fleet/rollouts/{rollback_id}")
        if rollout.get("finished_at") is None:
            if deps.clock() - executed_at < deps.verify_deadline_seconds:
                return {"verification": "pending", "verification_note": f"rollout {rollback_id} still running"}
        else:
            executed_at = max(executed_at, datetime.fromisoformat(rollout["finished_at"]).timestamp())
    model = proposal.params.get("model") or _model_of(state)
    windows = deps.tools.read.list_windows(model, hours=deps.lookback_hours) if model else None
    outcome, note = judge_recovery(windows.data if windows is not None and windows.ok else [],
                                   proposal=proposal.model_dump(mode="json"), executed_at=executed_at,
                                   min_windows=deps.verify_windows, max_error_rate=deps.max_error_rate)
    if outcome == "unknown" and deps.clock() - executed_at < deps.verify_deadline_seconds:
        return {"verification": "pending", "verification_note": note}
    evidence = [{"kind": "incident", "id": state["incident_id"]}] if state.get("incident_id") else []
    deps.client.verify(proposal.id, VerificationCreate.model_validate(
        {"outcome": outcome, "note": note[:200], "evidence": evidence}))
    return {"outcome": "verified", "verification": outcome, "verification_note": note}


def after_verify(state: RemediationState) -> Literal["await_telemetry", "__end__"]:
    """Wait for more windows while too few have closed since execution."""
    return "await_telemetry" if state.get("verification") == "pending" else "__end__"


def await_telemetry(state: RemediationState, deps: Deps) -> dict[str, Any]:
    """Pause until the worker's next verification pass (fresh windows arrive on their own schedule)."""
    interrupt({"waiting_for": "telemetry", "proposal_id": state["proposal_id"]})
    return {}


def _model_of(state: RemediationState) -> str | None:
    for finding in state["findings"]:
        model = finding.get("scope", {}).get("model")
        if model:
            return str(model)
    return None

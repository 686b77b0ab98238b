"""Remediation graph state: the chosen proposal, its fate, and the verification outcome."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class RemediationInput(TypedDict):
    """The incident and the RCA's ranked findings."""

    incident_id: str
    findings: list[dict[str, Any]]
    attempt: NotRequired[int]  # > 0: a re-proposal after a stale refusal, under a fresh idempotency key


class RemediationState(RemediationInput, total=False):
    """Internal state."""

    proposal_body: dict[str, Any] | None
    proposal_id: str
    proposal_state: str
    outcome: str  # monitor | proposed | already_proposed | rejected | expired | failed | verified
    verification: str
    verification_note: str

"""Triage graph state."""

from __future__ import annotations

from typing import TypedDict


class TriageInput(TypedDict):
    """A new or recurring alert."""

    alert_id: str


class TriageState(TriageInput, total=False):
    """Internal state: the incident it joined and the decision."""

    incident_id: str
    occurrences: int
    decision: str  # investigate | suppress
    reason: str
    severity: str
    started_at: float  # deps.clock() when assess ran: the run's duration in its agent-run record
    note_entry_id: int

"""RCA graph state: ids in, evidence and ranked findings out."""

from __future__ import annotations

from typing import Any, TypedDict


class RcaInput(TypedDict):
    """What starts an investigation."""

    incident_id: str


class RcaState(RcaInput, total=False):
    """Internal state: the gathered evidence, the supported findings, what the LLM check dropped."""

    now: float
    alert_count: int
    evidence: dict[str, Any]
    findings: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    explanation: str
    explained_by: str  # "template" or "llm:<model>"
    tools_used: list[str]
    prompt_version_ids: list[str]  # the registry prompt versions the LLM was given (empty: built-in text)
    report_entry_id: int

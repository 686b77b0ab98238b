"""Idempotent writes shared by the graphs: one agent run per run key, one timeline entry per agent run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.tools import Toolset
from control_plane.incidents.schemas import RcaReport, TriageNote

PROMPT_SOURCE = "builtin:agents/llm.py#SYSTEM_PROMPT"


@dataclass
class Deps:
    """What the nodes use; never stored in graph state (state holds ids and evidence only)."""

    client: ControlPlaneClient
    llm: LlmClient | None = None
    clock: Callable[[], float] = time.time
    lookback_hours: float = 6.0
    verify_windows: int = 3
    max_error_rate: float = 0.05
    verify_deadline_seconds: float = 900.0
    tools: Toolset = field(init=False)

    def __post_init__(self) -> None:
        self.tools = Toolset(self.client)


def ensure_agent_run(deps: Deps, agent: str, run_key: str, outcome: str, details: dict[str, Any],
                     prompt_version_ids: list[str] | None = None, started_at: float | None = None) -> str:
    """Return the agent run recorded under ``run_key``, recording it first if there is none.

    ``started_at`` (deps.clock() when the run's first node ran) becomes ``details.duration_seconds``, which
    /metrics turns into edgeloop_agent_run_duration_seconds.
    """
    for run in deps.client.read_json("/agent-runs", {"agent": agent, "limit": 100}):
        if (run.get("details") or {}).get("run_key") == run_key:
            return str(run["id"])
    prompt = (f"registry:{prompt_version_ids}" if prompt_version_ids else PROMPT_SOURCE) if deps.llm else None
    run_details: dict[str, Any] = {"run_key": run_key, "model": deps.llm.model if deps.llm else None,
                                   "prompt": prompt, **details}
    if started_at is not None:
        run_details["duration_seconds"] = round(max(0.0, deps.clock() - started_at), 3)
    body = {"agent": agent, "input_summary": run_key[:200], "outcome": outcome[:40],
            "prompt_version_ids": prompt_version_ids or [], "details": run_details}
    return str(deps.client.record_agent_run(body)["id"])


def post_once(deps: Deps, incident_id: str, entry: TriageNote | RcaReport) -> int:
    """Post a timeline entry unless one from the same agent run is already there; return its id."""
    for existing in deps.client.timeline(incident_id):
        if existing.agent_run_id is not None and existing.agent_run_id == entry.agent_run_id:
            return existing.id
    return deps.client.post(incident_id, entry).id

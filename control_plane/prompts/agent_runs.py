"""Agent runs: which agent ran, on what, with which prompt versions, and how it ended."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.errors import Invalid, NotFound
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.prompts.models import AgentRun, PromptVersion
from control_plane.prompts.schemas import AgentRunCreate


def create_agent_run(*, session: Session, request: AgentRunCreate, actor: str) -> AgentRun:
    """Record an agent run and link each prompt version it used to it in lineage."""
    version_ids = list(dict.fromkeys(request.prompt_version_ids))
    found = set(session.scalars(select(PromptVersion.id).where(PromptVersion.id.in_(version_ids))))
    unknown = [v for v in version_ids if v not in found]
    if unknown:
        raise Invalid(f"unknown prompt version id(s): {', '.join(unknown)}", unknown=unknown)
    run = AgentRun(agent=request.agent, input_summary=request.input_summary, outcome=request.outcome,
                   prompt_version_ids=version_ids, details=request.details, created_by=actor)
    session.add(run)
    session.flush()
    for version_id in version_ids:
        lineage.link(session, (NodeKind.PROMPT_VERSION, version_id), (NodeKind.AGENT_RUN, run.id), "used_by")
    audit.record(session, actor=actor, action="agent_run.create", resource=("agent_run", run.id),
                 data={"agent": run.agent, "outcome": run.outcome, "prompt_version_ids": version_ids})
    return run


def get_agent_run(*, session: Session, run_id: str) -> AgentRun:
    """Return an agent run or raise NotFound."""
    run = session.get(AgentRun, run_id)
    if run is None:
        raise NotFound(f"agent run {run_id!r} not found")
    return run


def list_agent_runs(*, session: Session, agent: str | None = None, limit: int = 100) -> list[AgentRun]:
    """Return agent runs, newest first."""
    query = select(AgentRun).order_by(AgentRun.created_at.desc(), AgentRun.id).limit(limit)
    return list(session.scalars(query.where(AgentRun.agent == agent) if agent else query))


def _label_runs(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(AgentRun.id, AgentRun.agent, AgentRun.outcome).where(AgentRun.id.in_(ids)))
    return {r.id: f"{r.agent} ({r.outcome})" for r in rows}


lineage.register_labeler(NodeKind.AGENT_RUN, _label_runs)

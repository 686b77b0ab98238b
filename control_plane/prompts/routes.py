"""Prompt registry routes: prompts, versions, labels, diff, render, sync and agent runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from control_plane.constraints import Name as Identifier
from control_plane.constraints import ParamNonNegativeInt64
from control_plane.deps import Admin, Approver, Proposer, Reader, SessionDep, SettingsDep, Writer
from control_plane.errors import Invalid
from control_plane.prompts import agent_runs, labels, service, sync
from control_plane.prompts.models import Prompt, PromptLabel, PromptVersion
from control_plane.prompts.schemas import (
    AgentRunCreate,
    AgentRunRead,
    DiffRead,
    GateConfig,
    LabelMoveRead,
    LabelRead,
    LabelSet,
    PromptCreate,
    PromptKind,
    PromptRead,
    RenderRead,
    RenderRequest,
    SyncReport,
    VersionCreate,
    VersionRead,
)

router = APIRouter(tags=["prompts"])
Limit = Annotated[int, Query(ge=1, le=1000)]
LabelPath = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_-]*$")]
RefPath = Annotated[str, Path(min_length=1, max_length=100, description="version number, label or 'latest'")]


def label_read(pointer: PromptLabel) -> LabelRead:
    """Present a label with the version number it points at."""
    return LabelRead(label=pointer.label, version=pointer.version.version, version_id=pointer.version_id,
                     protected=pointer.protected, updated_at=pointer.updated_at, updated_by=pointer.updated_by,
                     eval_run_id=pointer.eval_run_id, dataset_version_id=pointer.dataset_version_id)


def prompt_read(session: SessionDep, prompt: Prompt) -> PromptRead:
    """Present a prompt with its latest version number and labels."""
    return PromptRead(id=prompt.id, name=prompt.name, kind=PromptKind(prompt.kind), description=prompt.description,
                      gate=prompt.gate, created_by=prompt.created_by, created_at=prompt.created_at,
                      latest_version=service.latest_version_number(session=session, prompt_id=prompt.id),
                      labels=[label_read(p) for p in prompt.labels])


def version_read(version: PromptVersion) -> VersionRead:
    """Present a version with the labels pointing at it."""
    prompt = version.prompt
    return VersionRead(id=version.id, prompt_name=prompt.name, kind=PromptKind(prompt.kind), version=version.version,
                       template=version.template, messages=version.messages, variables=version.variables,
                       model_params=version.model_params, commit_message=version.commit_message,
                       content_hash=version.content_hash, source=version.source, created_by=version.created_by,
                       created_at=version.created_at,
                       labels=sorted(p.label for p in prompt.labels if p.version_id == version.id))


@router.post("/prompts", status_code=status.HTTP_201_CREATED, response_model=PromptRead)
def create_prompt(body: PromptCreate, session: SessionDep, caller: Writer) -> PromptRead:
    """Register a prompt name (text or chat) with an optional eval gate."""
    return prompt_read(session, service.create_prompt(session=session, request=body, actor=caller.actor))


@router.get("/prompts", response_model=list[PromptRead])
def list_prompts(
    session: SessionDep, _: Reader, limit: Limit = 100, offset: ParamNonNegativeInt64 = 0
) -> list[PromptRead]:
    """List prompts with their labels."""
    return [prompt_read(session, p) for p in service.list_prompts(session=session, limit=limit, offset=offset)]


@router.post("/prompts/sync", response_model=SyncReport)
def sync_prompts(session: SessionDep, settings: SettingsDep, caller: Admin) -> SyncReport:
    """Sync the server's prompts directory into the registry now (as at start-up)."""
    directory = sync.prompts_dir(settings)
    if directory is None:
        raise Invalid("no prompts directory: set EDGELOOP_PROMPTS_DIR")
    return sync.sync_directory(session=session, directory=directory, actor=caller.actor)


@router.get("/prompts/{name}", response_model=PromptRead)
def get_prompt(name: Identifier, session: SessionDep, _: Reader) -> PromptRead:
    """Return one prompt with its labels."""
    return prompt_read(session, service.get_prompt(session=session, name=name))


@router.put("/prompts/{name}/gate", response_model=PromptRead)
def set_gate(name: Identifier, body: GateConfig, session: SessionDep, caller: Approver) -> PromptRead:
    """Replace the eval gate protected labels must pass (approvers only: it guards production)."""
    gate = body.model_dump(exclude_none=True)
    return prompt_read(session, service.update_gate(session=session, name=name, gate=gate, actor=caller.actor))


@router.post("/prompts/{name}/versions", status_code=status.HTTP_201_CREATED, response_model=VersionRead)
def create_version(name: Identifier, body: VersionCreate, session: SessionDep, caller: Writer) -> VersionRead:
    """Add an immutable version; content identical to an existing version is a 409."""
    version, _ = service.create_version(session=session, name=name, request=body, actor=caller.actor)
    return version_read(version)


@router.get("/prompts/{name}/versions", response_model=list[VersionRead])
def list_versions(name: Identifier, session: SessionDep, _: Reader) -> list[VersionRead]:
    """List every version, oldest first."""
    return [version_read(v) for v in service.list_versions(session=session, name=name)]


@router.get("/prompts/{name}/versions/{ref}", response_model=VersionRead)
def get_version(name: Identifier, ref: RefPath, session: SessionDep, _: Reader) -> VersionRead:
    """Return the version a number, label or 'latest' refers to."""
    return version_read(service.resolve(session=session, name=name, ref=ref))


@router.get("/prompts/{name}/diff", response_model=DiffRead)
def diff_versions(
    name: Identifier, session: SessionDep, _: Reader,
    from_ref: Annotated[str, Query(alias="from", min_length=1, max_length=100)],
    to_ref: Annotated[str, Query(alias="to", min_length=1, max_length=100)],
) -> DiffRead:
    """Return the unified diff between two versions (numbers or labels)."""
    old, new, text = service.diff(session=session, name=name, from_ref=from_ref, to_ref=to_ref)
    return DiffRead(prompt_name=name, from_version=old.version, to_version=new.version, diff=text, changed=bool(text))


@router.post("/prompts/{name}/render", response_model=RenderRead)
def render_prompt(name: Identifier, body: RenderRequest, session: SessionDep, _: Reader) -> RenderRead:
    """Render a version with variables; a missing variable is a 422 naming it."""
    version = service.resolve(session=session, name=name, ref=body.ref)
    text, messages = service.render_version(version, body.variables)
    return RenderRead(prompt_name=name, version=version.version, version_id=version.id, text=text, messages=messages,
                      model_params=version.model_params)


@router.put("/prompts/{name}/labels/{label}", response_model=LabelMoveRead)
def set_label(name: Identifier, label: LabelPath, body: LabelSet, session: SessionDep, caller: Writer) -> LabelMoveRead:
    """Move a label; protected labels need an approver and a passing eval gate (or an override reason)."""
    pointer, decision, overridden = labels.set_label(session=session, name=name, label=label, request=body,
                                                     principal=caller)
    return LabelMoveRead(**label_read(pointer).model_dump(), gate=decision, overridden=overridden)


@router.delete("/prompts/{name}/labels/{label}", status_code=status.HTTP_204_NO_CONTENT)
def delete_label(name: Identifier, label: LabelPath, session: SessionDep, caller: Writer) -> Response:
    """Remove a label; protected labels need an approver."""
    labels.delete_label(session=session, name=name, label=label, principal=caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/agent-runs", status_code=status.HTTP_201_CREATED, response_model=AgentRunRead)
def create_agent_run(body: AgentRunCreate, session: SessionDep, caller: Proposer) -> AgentRunRead:
    """Record an agent run and the prompt versions it used (lineage prompt_version → agent_run)."""
    return AgentRunRead.model_validate(agent_runs.create_agent_run(session=session, request=body, actor=caller.actor))


@router.get("/agent-runs", response_model=list[AgentRunRead])
def list_agent_runs(session: SessionDep, _: Reader, agent: Identifier | None = None,
                    limit: Limit = 100) -> list[AgentRunRead]:
    """List agent runs, newest first."""
    return [AgentRunRead.model_validate(r) for r in agent_runs.list_agent_runs(session=session, agent=agent,
                                                                                limit=limit)]


@router.get("/agent-runs/{run_id}", response_model=AgentRunRead)
def get_agent_run(run_id: Identifier, session: SessionDep, _: Reader) -> AgentRunRead:
    """Return one agent run."""
    return AgentRunRead.model_validate(agent_runs.get_agent_run(session=session, run_id=run_id))

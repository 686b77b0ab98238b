"""Prompts and their immutable versions: create, resolve NAME@REF, diff, render."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.prompts.gate import pin_gate
from control_plane.prompts.models import Prompt, PromptLabel, PromptVersion
from control_plane.prompts.schemas import PromptCreate, PromptKind, VersionCreate
from control_plane.prompts.templates import TemplateProblem, render, variables_of


def create_prompt(*, session: Session, request: PromptCreate, actor: str) -> Prompt:
    """Register a prompt name."""
    if session.scalar(select(Prompt.id).where(Prompt.name == request.name)) is not None:
        raise Conflict(f"prompt {request.name!r} already exists")
    gate = pin_gate(session=session, gate=request.gate.model_dump(exclude_none=True)) if request.gate else {}
    prompt = Prompt(name=request.name, kind=request.kind.value, description=request.description, gate=gate,
                    created_by=actor)
    session.add(prompt)
    session.flush()
    audit.record(session, actor=actor, action="prompt.create", resource=("prompt", prompt.id),
                 data={"name": prompt.name, "kind": prompt.kind, "gate": gate})
    return prompt


def get_prompt(*, session: Session, name: str, lock: bool = False) -> Prompt:
    """Return a prompt by name or raise NotFound; ``lock`` serialises writers on this prompt."""
    query = select(Prompt).where(Prompt.name == name)
    prompt = session.scalar(query.with_for_update() if lock else query)
    if prompt is None:
        raise NotFound(f"prompt {name!r} not found")
    return prompt


def list_prompts(*, session: Session, limit: int = 100, offset: int = 0) -> list[Prompt]:
    """Return prompts by name."""
    return list(session.scalars(select(Prompt).order_by(Prompt.name).limit(limit).offset(offset)))


def update_gate(*, session: Session, name: str, gate: dict[str, Any], actor: str) -> Prompt:
    """Replace the eval gate of a prompt, pinning its dataset version (callers check the approver scope)."""
    prompt = get_prompt(session=session, name=name, lock=True)
    previous = prompt.gate
    gate = pin_gate(session=session, gate=gate)
    prompt.gate = gate
    session.flush()
    audit.record(session, actor=actor, action="prompt.gate.update", resource=("prompt", prompt.id),
                 data={"name": name, "from": previous, "to": gate})
    return prompt


def latest_version_number(*, session: Session, prompt_id: str) -> int | None:
    """Return the highest version number of a prompt, if any."""
    return session.scalar(select(func.max(PromptVersion.version)).where(PromptVersion.prompt_id == prompt_id))


def content_hash(*, kind: str, template: str, messages: list[dict[str, str]], variables: list[str],
                 model_params: Mapping[str, Any]) -> str:
    """Return the sha256 of a version's content; the commit message is not content."""
    canonical = json.dumps({"kind": kind, "template": template, "messages": messages, "variables": variables,
                            "model_params": model_params}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prepare_version(kind: str, request: VersionCreate) -> tuple[list[dict[str, str]], list[str], dict[str, Any]]:
    """Validate a version body against the prompt kind; return messages, variables and model params."""
    if kind == PromptKind.TEXT and request.messages:
        raise Invalid("a text prompt takes a template, not messages")
    if kind == PromptKind.CHAT and request.template:
        raise Invalid("a chat prompt takes messages, not a template")
    messages = [m.model_dump() for m in request.messages]
    try:
        used = variables_of(template=request.template, messages=messages)
    except TemplateProblem as exc:
        raise Invalid(str(exc)) from exc
    if request.variables is None:
        variables = used
    else:
        variables = sorted(set(request.variables))
        undeclared = sorted(set(used) - set(variables))
        if undeclared:
            raise Invalid(f"template uses undeclared variable(s): {', '.join(undeclared)}", undeclared=undeclared)
    return messages, variables, request.model_params.model_dump(exclude_none=True)


def create_version(
    *, session: Session, name: str, request: VersionCreate, actor: str, source: str = "api",
    allow_unchanged: bool = False,
) -> tuple[PromptVersion, bool]:
    """Add the next immutable version; identical content is a conflict, or a no-op with ``allow_unchanged``."""
    prompt = get_prompt(session=session, name=name, lock=True)
    messages, variables, params = prepare_version(prompt.kind, request)
    digest = content_hash(kind=prompt.kind, template=request.template, messages=messages, variables=variables,
                          model_params=params)
    existing = session.scalar(select(PromptVersion).where(PromptVersion.prompt_id == prompt.id,
                                                          PromptVersion.content_hash == digest))
    if existing is not None:
        if allow_unchanged:
            return existing, False
        raise Conflict(f"prompt {name!r} version {existing.version} already has this content",
                       version=existing.version, version_id=existing.id)
    number = (latest_version_number(session=session, prompt_id=prompt.id) or 0) + 1
    version = PromptVersion(prompt_id=prompt.id, version=number, template=request.template, messages=messages,
                            variables=variables, model_params=params, commit_message=request.commit_message,
                            content_hash=digest, source=source, created_by=actor)
    session.add(version)
    session.flush()
    audit.record(session, actor=actor, action="prompt_version.create", resource=("prompt_version", version.id),
                 data={"prompt": name, "version": number, "content_hash": digest, "source": source,
                       "commit_message": request.commit_message})
    return version, True


def get_version(*, session: Session, name: str, version: int) -> PromptVersion:
    """Return one version of a prompt or raise NotFound."""
    prompt = get_prompt(session=session, name=name)
    found = session.scalar(select(PromptVersion).where(PromptVersion.prompt_id == prompt.id,
                                                       PromptVersion.version == version))
    if found is None:
        raise NotFound(f"prompt {name!r} has no version {version}")
    return found


def get_version_by_id(*, session: Session, version_id: str) -> PromptVersion:
    """Return a version by id or raise NotFound."""
    found = session.get(PromptVersion, version_id)
    if found is None:
        raise NotFound(f"prompt version {version_id!r} not found")
    return found


def list_versions(*, session: Session, name: str) -> list[PromptVersion]:
    """Return every version of a prompt, oldest first."""
    return list(get_prompt(session=session, name=name).versions)


def resolve(*, session: Session, name: str, ref: str | None) -> PromptVersion:
    """Resolve a reference: a version number, a label, ``latest``, or nothing (latest)."""
    if ref is None or ref == "latest":
        prompt = get_prompt(session=session, name=name)
        if not prompt.versions:
            raise NotFound(f"prompt {name!r} has no versions")
        return prompt.versions[-1]
    if ref.isdigit():
        return get_version(session=session, name=name, version=int(ref))
    prompt = get_prompt(session=session, name=name)
    pointer = session.get(PromptLabel, (prompt.id, ref))
    if pointer is None:
        raise NotFound(f"prompt {name!r} has no label {ref!r}")
    return pointer.version


def resolve_ref(*, session: Session, ref: str) -> PromptVersion:
    """Resolve ``NAME``, ``NAME@N`` or ``NAME@label``."""
    name, _, version_ref = ref.partition("@")
    return resolve(session=session, name=name, ref=version_ref or None)


def _lines(version: PromptVersion) -> list[str]:
    chat = "".join(f"=== {m['role']} ===\n{m['content'].rstrip()}\n" for m in version.messages)
    body = version.template or chat
    params = json.dumps(version.model_params, sort_keys=True)
    header = f"# variables: {', '.join(version.variables)}\n# model_params: {params}\n"
    return (header + body).splitlines(keepends=True)


def diff(*, session: Session, name: str, from_ref: str, to_ref: str) -> tuple[PromptVersion, PromptVersion, str]:
    """Return a unified diff (difflib) between two versions, parameters included."""
    old = resolve(session=session, name=name, ref=from_ref)
    new = resolve(session=session, name=name, ref=to_ref)
    text = "".join(difflib.unified_diff(_lines(old), _lines(new), fromfile=f"{name}@{old.version}",
                                        tofile=f"{name}@{new.version}"))
    return old, new, text


def render_version(version: PromptVersion, variables: Mapping[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """Render a version strictly; a missing variable is a 422 that names it."""
    try:
        return render(template=version.template, messages=version.messages, declared=version.variables,
                      variables=variables)
    except TemplateProblem as exc:
        raise Invalid(str(exc), missing=list(exc.missing)) from exc


def _label_versions(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(PromptVersion.id, Prompt.name, PromptVersion.version)
                           .join(Prompt, Prompt.id == PromptVersion.prompt_id).where(PromptVersion.id.in_(ids)))
    return {r.id: f"{r.name}@{r.version}" for r in rows}


lineage.register_labeler(NodeKind.PROMPT_VERSION, _label_versions)

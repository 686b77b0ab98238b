"""Movable labels. Protected ones need an approver and a passing eval gate, or an audited override."""

from __future__ import annotations

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Forbidden, Invalid, NotFound
from control_plane.prompts import service
from control_plane.prompts.gate import evaluate_gate
from control_plane.prompts.models import PromptLabel
from control_plane.prompts.schemas import DEFAULT_PROTECTED_LABELS, GateDecision, LabelSet


def is_protected(label: str, pointer: PromptLabel | None) -> bool:
    """Return whether moving ``label`` needs an approver and the gate."""
    return label in DEFAULT_PROTECTED_LABELS or bool(pointer and pointer.protected)


def set_label(
    *, session: Session, name: str, label: str, request: LabelSet, principal: Principal,
    bootstrap_reason: str | None = None,
) -> tuple[PromptLabel, GateDecision | None, bool]:
    """Point a label at a version; return the label, the gate decision and whether it was overridden.

    ``bootstrap_reason`` skips the gate; only the prompt-file sync uses it, for a prompt's first label.
    """
    prompt = service.get_prompt(session=session, name=name, lock=True)
    target = service.get_version(session=session, name=name, version=request.version)
    pointer = session.get(PromptLabel, (prompt.id, label))
    protected = is_protected(label, pointer) or bool(request.protected)
    changes_protection = (request.protected is not None and pointer is not None
                          and request.protected != pointer.protected)
    if (protected or changes_protection) and Scope.APPROVE not in principal.scopes:
        raise Forbidden(f"label {label!r} is protected: only an approver or admin may move it",
                        required_scope=Scope.APPROVE.value)
    if request.override_reason and not protected:
        raise Invalid(f"label {label!r} is not protected: an override reason does not apply")
    decision: GateDecision | None = None
    overridden = False
    if protected and bootstrap_reason is None:
        decision = evaluate_gate(session=session, prompt=prompt, version=target)
        if not decision.passed:
            if not request.override_reason:
                raise Conflict(f"promotion gate failed for {name}@{target.version}: {decision.reason}; run an eval "
                               "or give an approver override_reason", gate=decision.model_dump())
            overridden = True
    previous = pointer.version.version if pointer else None
    # The move records what it relied on: the run and dataset version the gate judged (even when overridden).
    evidence = {"eval_run_id": decision.eval_run_id if decision else None,
                "dataset_version_id": decision.dataset_version_id if decision else None}
    if pointer is None:
        pointer = PromptLabel(prompt_id=prompt.id, label=label, version_id=target.id, protected=protected,
                              updated_at=utcnow(), updated_by=principal.actor, **evidence)
        session.add(pointer)
    else:
        pointer.version_id = target.id
        pointer.protected = request.protected if request.protected is not None else protected
        pointer.updated_at = utcnow()
        pointer.updated_by = principal.actor
        pointer.eval_run_id = evidence["eval_run_id"]
        pointer.dataset_version_id = evidence["dataset_version_id"]
    session.flush()
    session.refresh(pointer)
    data = {"prompt": name, "label": label, "from_version": previous, "to_version": target.version,
            "version_id": target.id, "protected": pointer.protected, **evidence,
            "dataset": decision.dataset if decision else None,
            "gate": decision.model_dump() if decision else None}
    if overridden:
        data["override_reason"] = request.override_reason
    if bootstrap_reason:
        data["gate_skipped"] = bootstrap_reason
    action = "prompt_label.override" if overridden else "prompt_label.set"
    audit.record(session, actor=principal.actor, action=action, resource=("prompt", prompt.id), data=data)
    return pointer, decision, overridden


def delete_label(*, session: Session, name: str, label: str, principal: Principal) -> None:
    """Remove a label; protected ones need the approve scope."""
    prompt = service.get_prompt(session=session, name=name, lock=True)
    pointer = session.get(PromptLabel, (prompt.id, label))
    if pointer is None:
        raise NotFound(f"prompt {name!r} has no label {label!r}")
    if is_protected(label, pointer) and Scope.APPROVE not in principal.scopes:
        raise Forbidden(f"label {label!r} is protected", required_scope=Scope.APPROVE.value)
    audit.record(session, actor=principal.actor, action="prompt_label.delete", resource=("prompt", prompt.id),
                 data={"prompt": name, "label": label, "version": pointer.version.version})
    session.delete(pointer)
    session.flush()

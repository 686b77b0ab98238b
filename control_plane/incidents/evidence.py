"""Check that evidence references point at resources that exist (one lookup table, one query per kind)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.alerts.models import Alert
from control_plane.audit.models import AuditEntry
from control_plane.errors import Invalid
from control_plane.evals.models import EvalRun
from control_plane.fleet.models import Deployment, Device, Rollout
from control_plane.incidents.models import Incident
from control_plane.incidents.schemas import DriftQuery, DriftReportRef, EvidenceKind, EvidenceRef
from control_plane.prompts.models import Prompt, PromptVersion
from control_plane.registry.models import ModelVersion, RegisteredModel


def _by_primary_key(model: type) -> Callable[[Session, str], bool]:
    def exists(session: Session, ref_id: str) -> bool:
        return session.get(model, ref_id) is not None
    return exists


def _audit_entry(session: Session, ref_id: str) -> bool:
    return ref_id.isdigit() and len(ref_id) < 19 and session.get(AuditEntry, int(ref_id)) is not None


def prompt_version_id(session: Session, ref_id: str) -> str | None:
    """Resolve ``pv_...`` or ``NAME@N`` to a prompt version id, or None."""
    if "@" in ref_id:
        name, _, number = ref_id.rpartition("@")
        if not number.isdigit() or len(number) > 9:
            return None
        return session.scalar(select(PromptVersion.id).join(Prompt, Prompt.id == PromptVersion.prompt_id)
                              .where(Prompt.name == name, PromptVersion.version == int(number)))
    return ref_id if session.get(PromptVersion, ref_id) is not None else None


def model_version_id(session: Session, model: str, version: int) -> str | None:
    """Return the id of ``model`` version ``version``, or None."""
    return session.scalar(select(ModelVersion.id).join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
                          .where(RegisteredModel.name == model, ModelVersion.version == version))


_EXISTS: dict[EvidenceKind, Callable[[Session, str], bool]] = {
    EvidenceKind.ALERT: _by_primary_key(Alert),
    EvidenceKind.INCIDENT: _by_primary_key(Incident),
    EvidenceKind.ROLLOUT: _by_primary_key(Rollout),
    EvidenceKind.DEPLOYMENT: _by_primary_key(Deployment),
    EvidenceKind.MODEL_VERSION: _by_primary_key(ModelVersion),
    EvidenceKind.PROMPT_VERSION: lambda session, ref_id: prompt_version_id(session, ref_id) is not None,
    EvidenceKind.EVAL_RUN: _by_primary_key(EvalRun),
    EvidenceKind.DEVICE: _by_primary_key(Device),
    EvidenceKind.AUDIT_ENTRY: _audit_entry,
}


def _drift_query_problem(session: Session, query: DriftQuery) -> str | None:
    if model_version_id(session, query.model, query.version) is None:
        return f"model {query.model!r} has no version {query.version}"
    if query.deployment_id and session.get(Deployment, query.deployment_id) is None:
        return f"deployment {query.deployment_id!r} not found"
    if query.rollout_id and session.get(Rollout, query.rollout_id) is None:
        return f"rollout {query.rollout_id!r} not found"
    return None


def check_refs(session: Session, refs: Iterable[tuple[str, EvidenceRef]]) -> None:
    """Raise Invalid naming every (field, reference) that points at nothing."""
    problems: list[dict[str, str]] = []
    for field, ref in refs:
        if isinstance(ref, DriftReportRef):
            problem = _drift_query_problem(session, ref.query)
        else:
            problem = None if _EXISTS[EvidenceKind(ref.kind)](session, ref.id) else f"{ref.kind} {ref.id!r} not found"
        if problem:
            problems.append({"field": field, "message": problem})
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise Invalid(f"evidence points at nothing: {summary}", errors=problems)

"""The promotion gate: a protected label may only point at a version whose latest gate eval passed."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.evals.models import EvalDataset, EvalDatasetVersion, EvalRun
from control_plane.prompts.models import Prompt, PromptVersion
from control_plane.prompts.schemas import GateCheckRead, GateConfig, GateDecision
from evals.metrics import evaluate_thresholds

# Applies when a prompt stores no gate of its own: any dataset, faithfulness of at least 0.7 (offline tier).
DEFAULT_GATE = GateConfig(minimums={"faithfulness": 0.7})


def gate_of(prompt: Prompt) -> GateConfig:
    """Return the prompt's stored gate, or the default one."""
    return GateConfig.model_validate(prompt.gate) if prompt.gate else DEFAULT_GATE


def thresholds_of(gate: GateConfig) -> dict[str, Any]:
    """Return the gate's thresholds in the shape eval runs store them."""
    return {"minimums": dict(gate.minimums), "maximums": dict(gate.maximums)}


def _latest_run(session: Session, version: PromptVersion, dataset_ref: str | None) -> EvalRun | None:
    query = (select(EvalRun).where(EvalRun.prompt_version_id == version.id)
             .order_by(EvalRun.created_at.desc(), EvalRun.id.desc()).limit(1))
    if dataset_ref:
        name, _, number = dataset_ref.partition("@")
        query = (query.join(EvalDatasetVersion, EvalDatasetVersion.id == EvalRun.dataset_version_id)
                 .join(EvalDataset, EvalDataset.id == EvalDatasetVersion.dataset_id).where(EvalDataset.name == name))
        if number.isdigit():
            query = query.where(EvalDatasetVersion.version == int(number))
    return session.scalar(query)


def evaluate_gate(*, session: Session, prompt: Prompt, version: PromptVersion) -> GateDecision:
    """Judge the newest eval run of ``version`` (on the gate's dataset) against the gate's thresholds."""
    gate = gate_of(prompt)
    run = _latest_run(session, version, gate.dataset)
    where = f" on dataset {gate.dataset!r}" if gate.dataset else ""
    if run is None:
        return GateDecision(passed=False, eval_run_id=None,
                            reason=f"no eval run of {prompt.name}@{version.version}{where}")
    if not gate.minimums and not gate.maximums:
        # A gate without thresholds of its own defers to the thresholds the run was judged by.
        verdict = "passed" if run.passed else "failed"
        return GateDecision(passed=run.passed, eval_run_id=run.id, reason=f"eval run {run.id} {verdict}")
    result = evaluate_thresholds({k: float(v) for k, v in run.metrics.items() if isinstance(v, int | float)},
                                 gate.minimums, gate.maximums)
    checks = [GateCheckRead(metric=c.metric, value=c.value if math.isfinite(c.value) else None,
                            threshold=c.threshold, higher_is_better=c.higher_is_better, passed=c.passed)
              for c in result.checks]
    failed = ", ".join(f"{c.metric}={c.value} (needs {'>=' if c.higher_is_better else '<='} {c.threshold})"
                       for c in checks if not c.passed)
    reason = f"eval run {run.id} passed the gate" if result.passed else f"eval run {run.id} failed: {failed}"
    return GateDecision(passed=result.passed, eval_run_id=run.id, reason=reason, checks=checks)

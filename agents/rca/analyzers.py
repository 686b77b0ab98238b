"""Deterministic analyzers (k8sgpt style): each cause is scored from the evidence, with reasons for and against.

No analyzer is tuned to a scenario: each reads only general signals (error rate against the previous version,
which features drifted where, whether a rollout is mid-way, one device or cohort against its peers, a recent
prompt-label move with a worse eval, the same shift a week ago).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from statistics import median
from typing import Any

from pydantic import BaseModel, Field

from agents.rca.evidence import CohortStats, Evidence

MIN_ERROR_JUMP = 0.03
SUPPORTED = 0.3


class Cause(StrEnum):
    """The root causes the analyzers know."""

    BAD_MODEL_VERSION = "bad_model_version"
    COVARIATE_DRIFT = "covariate_drift"
    CONCEPT_DRIFT = "concept_drift"
    UPSTREAM_CHANGE = "upstream_change"
    DEVICE_FAULT = "device_fault"
    COHORT_FAULT = "cohort_fault"
    PROMPT_REGRESSION = "prompt_regression"
    INFRASTRUCTURE = "infrastructure"
    HARMLESS = "harmless"


class Finding(BaseModel):
    """One scored cause: confidence, scope, reasons for and against, and evidence references."""

    cause: Cause
    confidence: float
    scope: dict[str, Any]
    supporting: list[str] = Field(default_factory=list)
    against: list[str] = Field(default_factory=list)
    refs: list[dict[str, Any]] = Field(default_factory=list)


def _err(stats: CohortStats | None) -> float:
    return float(stats.error_rate or 0.0) if stats else 0.0


def _degraded(stats: CohortStats | None, reference: float) -> bool:
    return stats is not None and _err(stats) - reference >= MIN_ERROR_JUMP and _err(stats) > 2 * reference


def _drift_ref(evidence: Evidence, **cohort: Any) -> dict[str, Any]:
    return {"kind": "drift_report", "query": {"model": evidence.model, "version": evidence.version, **cohort}}


def _base(evidence: Evidence) -> list[dict[str, Any]]:
    return [{"kind": "alert", "id": a} for a in evidence.alert_ids[:10]]


def _unit_like(evidence: Evidence) -> set[str]:
    current = evidence.current.drifted if evidence.current else []
    return {f.feature for f in current if (f.out_of_range_rate or 0) > 0.2 or (f.missing_rate or 0) > 0.2}


def bad_model_version(evidence: Evidence) -> Finding:
    """The new version is worse than the one before it on the same traffic period."""
    finding = Finding(cause=Cause.BAD_MODEL_VERSION, confidence=0.0,
                      scope={"model": evidence.model, "version": evidence.version}, refs=_base(evidence))
    if evidence.previous is None:
        finding.against.append("no previous version with telemetry to compare against")
        return finding
    previous_error = _err(evidence.previous)
    regressed = _degraded(evidence.current, previous_error)
    if regressed:
        finding.supporting.append(f"error rate {_err(evidence.current):.1%} on v{evidence.version} against "
                                  f"{previous_error:.1%} on v{evidence.previous_version}")
        finding.confidence += 0.6
    only_new = (evidence.current.drifted_names if evidence.current else set()) - evidence.previous.drifted_names
    if not regressed and "prediction" in " ".join(only_new):
        finding.supporting.append("prediction drift only on the new version")
        finding.confidence += 0.4
    if evidence.rollout is not None:
        finding.refs.append({"kind": "rollout", "id": evidence.rollout["id"]})
        finding.scope["rollout_id"] = evidence.rollout["id"]
        waves = evidence.rollout.get("wave_plan") or []
        in_progress = evidence.rollout.get("state") in ("in_progress", "paused", "pending")
        if in_progress and waves and int(evidence.rollout.get("current_wave") or 0) < len(waves) - 1:
            finding.scope["canary"] = True
        if finding.confidence:
            finding.confidence += 0.2
    if evidence.shadow is not None:
        _shadow_evidence(finding, evidence.shadow)
    if _degraded(evidence.previous, 0.01):
        finding.against.append("the previous version is degraded too")
        finding.confidence *= 0.3
    groups_bad = [g for g in evidence.groups if _degraded(g, previous_error)]
    if finding.confidence and evidence.groups and len(groups_bad) == 1 and len(evidence.groups) > 1:
        finding.against.append(f"only cohort {groups_bad[0].scope.get('device_group')} is degraded")
        finding.confidence *= 0.5
    if finding.confidence:
        finding.refs.append(_drift_ref(evidence))
    return finding


def _shadow_evidence(finding: Finding, shadow: dict[str, Any]) -> None:
    """Canary vs shadow: a candidate that agreed in shadow but degrades live points past the model itself."""
    finding.refs.append({"kind": "rollout", "id": shadow.get("rollout_id"), "role": "shadow_phase"})
    for cohort in shadow.get("cohorts") or []:
        agreement = cohort.get("agreement") or {}
        if agreement.get("estimate") is None:
            continue
        line = (f"shadow phase, cohort {cohort.get('cohort')}: agreement {agreement['estimate']:.3f} "
                f"[{agreement.get('lower') or 0:.3f}, {agreement.get('upper') or 0:.3f}] over {cohort.get('rows')} "
                f"rows in {cohort.get('windows')} windows (gate {shadow.get('verdict')})")
        if finding.confidence and cohort.get("verdict") == "pass":
            finding.against.append(line + "; the candidate agreed with the old model in shadow")
        else:
            finding.supporting.append(line)


def drift(evidence: Evidence) -> list[Finding]:
    """Covariate drift (inputs moved), or an upstream schema/unit change (values out of range or missing)."""
    current = evidence.current.drifted_names if evidence.current else set()
    unit = _unit_like(evidence)
    covariate = Finding(cause=Cause.COVARIATE_DRIFT, confidence=0.0, refs=_base(evidence),
                        scope={"model": evidence.model, "version": evidence.version})
    upstream = Finding(cause=Cause.UPSTREAM_CHANGE, confidence=0.0, refs=_base(evidence),
                       scope={"model": evidence.model, "features": sorted(unit)})
    plain = current - unit
    if plain:
        covariate.supporting.append(f"drifted features: {', '.join(sorted(plain))}")
        covariate.confidence = 0.5 + min(0.2, 0.05 * len(plain))
        covariate.refs.append(_drift_ref(evidence))
        drifted_groups = [g for g in evidence.groups if g.drifted_names & plain]
        if len(evidence.groups) > 1 and len(drifted_groups) == 1:
            covariate.scope["device_group"] = drifted_groups[0].scope.get("device_group")
    if unit:
        upstream.supporting.append(f"out-of-range or missing values in {', '.join(sorted(unit))}")
        upstream.confidence = 0.6
        upstream.refs.append(_drift_ref(evidence))
        if evidence.previous is not None and unit & evidence.previous.drifted_names:
            upstream.supporting.append(f"v{evidence.previous_version} shows it too: upstream, not the model")
            upstream.confidence = 0.85
    return [covariate, upstream]


def concept_drift(evidence: Evidence) -> Finding:
    """Accuracy on delayed labels fell while the inputs did not move."""
    finding = Finding(cause=Cause.CONCEPT_DRIFT, confidence=0.0, refs=_base(evidence),
                      scope={"model": evidence.model, "version": evidence.version})
    if evidence.performance is None:
        return finding
    finding.supporting.append(f"accuracy {evidence.performance.get('accuracy')} below floor "
                              f"{evidence.performance.get('floor')} on delayed labels")
    inputs_moved = bool(evidence.current and evidence.current.drifted)
    if inputs_moved:
        finding.against.append("the inputs drifted too (covariate drift explains it better)")
    finding.confidence = 0.35 if inputs_moved else 0.8
    if evidence.previous is not None and evidence.rollout is not None and not _degraded(evidence.previous, 0):
        finding.against.append("a new version was rolled out recently")
        finding.confidence *= 0.6
    if evidence.prompt_moves:
        finding.against.append("a prompt label moved recently")
        finding.confidence *= 0.6
    return finding


def device_fault(evidence: Evidence) -> Finding:
    """One device errs far more than its peers."""
    finding = Finding(cause=Cause.DEVICE_FAULT, confidence=0.0, refs=_base(evidence), scope={"model": evidence.model})
    active = [d for d in evidence.devices if d.calls]
    if len(active) < 3:
        return finding
    worst = max(active, key=lambda d: d.error_rate)
    others = median(d.error_rate for d in active if d is not worst)
    second = sorted((d.error_rate for d in active), reverse=True)[1]
    if worst.error_rate >= 0.1 and worst.error_rate > 5 * max(others, 0.005) and second < worst.error_rate / 3:
        finding.supporting.append(f"device {worst.device_id} errs on {worst.error_rate:.1%} of calls, the median "
                                  f"peer on {others:.1%}")
        finding.confidence = 0.85
        finding.scope["device_id"] = worst.device_id
        finding.refs.append({"kind": "device", "id": worst.device_id})
    return finding


def cohort_fault(evidence: Evidence) -> Finding:
    """One device group errs while the others are healthy."""
    finding = Finding(cause=Cause.COHORT_FAULT, confidence=0.0, refs=_base(evidence), scope={"model": evidence.model})
    if len(evidence.groups) < 2:
        return finding
    # Compare each group with the median of the others (with two groups, a median over all would hide the bad one).
    bad = [g for g in evidence.groups
           if _degraded(g, max(median(_err(o) for o in evidence.groups if o is not g), 0.005))]
    healthy = median(_err(g) for g in evidence.groups if g not in bad) if len(bad) < len(evidence.groups) else 0.0
    if len(bad) == 1:
        group = bad[0].scope.get("device_group")
        finding.supporting.append(f"group {group} errs on {_err(bad[0]):.1%}, the others on {healthy:.1%}")
        finding.confidence = 0.6 if bad[0].devices > 1 else 0.3
        finding.scope["device_group"] = group
        finding.refs.append(_drift_ref(evidence, device_group=group))
    return finding


def prompt_regression(evidence: Evidence) -> Finding:
    """A prompt label moved recently and the new version's evals are worse."""
    finding = Finding(cause=Cause.PROMPT_REGRESSION, confidence=0.0, refs=_base(evidence), scope={})
    for move in sorted(evidence.prompt_moves, key=lambda m: -m["seq"]):
        runs = [r for r in evidence.eval_runs if r.get("prompt_version_id") == move.get("version_id")]
        failing = [r for r in runs if r.get("passed") is False]
        finding.scope = {"prompt": move["prompt"], "label": move["label"], "from_version": move["from_version"],
                         "to_version": move["to_version"]}
        finding.refs.append({"kind": "audit_entry", "id": str(move["seq"])})
        finding.supporting.append(f"label {move['label']} of {move['prompt']} moved v{move['from_version']} -> "
                                  f"v{move['to_version']}")
        finding.confidence = 0.4
        if {"performance", "error_rate"} & set(evidence.checks):
            finding.supporting.append("quality fell after the move")
            finding.confidence = 0.7
        if failing:
            finding.supporting.append(f"{len(failing)} eval run(s) of the new version failed")
            finding.refs.extend({"kind": "eval_run", "id": r["id"]} for r in failing[:5])
            finding.confidence = 0.85
        return finding
    return finding


def infrastructure(evidence: Evidence) -> Finding:
    """Latency or errors up on every version and cohort alike, with no drift: the serving side."""
    finding = Finding(cause=Cause.INFRASTRUCTURE, confidence=0.0, refs=_base(evidence),
                      scope={"model": evidence.model})
    infra_checks = {"latency", "error_rate"} & set(evidence.checks)
    if not infra_checks or (evidence.current and evidence.current.drifted):
        return finding
    previous_bad = evidence.previous is not None and (_degraded(evidence.previous, 0.01)
                                                      or "latency" in infra_checks)
    if evidence.previous is None or previous_bad:
        finding.supporting.append(f"{', '.join(sorted(infra_checks))} without input drift"
                                  + (f", v{evidence.previous_version} affected too" if previous_bad else ""))
        finding.confidence = 0.7 if previous_bad else 0.4
        finding.refs.append(_drift_ref(evidence))
    return finding


def harmless(evidence: Evidence) -> Finding:
    """Drift seen in the same weekday/hour a week ago, with no harm to errors or accuracy."""
    finding = Finding(cause=Cause.HARMLESS, confidence=0.0, refs=_base(evidence),
                      scope={"model": evidence.model, "version": evidence.version})
    harm = (evidence.performance is not None or _err(evidence.current) >= MIN_ERROR_JUMP
            or "latency" in evidence.checks or "error_rate" in evidence.checks)
    if harm:
        finding.against.append("errors, latency or accuracy are affected")
        return finding
    drifted = evidence.current.drifted_names if evidence.current else set()
    if evidence.seasonal is not None and drifted and drifted <= evidence.seasonal.drifted_names:
        finding.supporting.append("the same features drifted in the same weekday/hour one week ago, without harm")
        finding.confidence = 0.9
        finding.refs.append(_drift_ref(evidence))
    elif not drifted:
        finding.supporting.append("no drift, error or accuracy problem in the current data")
        finding.confidence = 0.35
    return finding


ANALYZERS: tuple[Callable[[Evidence], Finding | list[Finding]], ...] = (
    bad_model_version, drift, concept_drift, device_fault, cohort_fault, prompt_regression, infrastructure, harmless)


# Which causes can produce which alert check: a cause that explains none of the incident's alerts is halved.
EXPLAINS: dict[str, frozenset[Cause]] = {
    "feature_drift": frozenset({Cause.COVARIATE_DRIFT, Cause.UPSTREAM_CHANGE, Cause.HARMLESS}),
    "prediction_drift": frozenset({Cause.BAD_MODEL_VERSION, Cause.COVARIATE_DRIFT, Cause.CONCEPT_DRIFT,
                                   Cause.UPSTREAM_CHANGE, Cause.HARMLESS}),
    "missing_rate": frozenset({Cause.UPSTREAM_CHANGE, Cause.DEVICE_FAULT, Cause.COHORT_FAULT}),
    "out_of_range": frozenset({Cause.UPSTREAM_CHANGE, Cause.COVARIATE_DRIFT, Cause.DEVICE_FAULT}),
    "error_rate": frozenset({Cause.BAD_MODEL_VERSION, Cause.DEVICE_FAULT, Cause.COHORT_FAULT, Cause.INFRASTRUCTURE,
                             Cause.PROMPT_REGRESSION}),
    "latency": frozenset({Cause.INFRASTRUCTURE, Cause.BAD_MODEL_VERSION, Cause.DEVICE_FAULT, Cause.COHORT_FAULT}),
    "performance": frozenset({Cause.CONCEPT_DRIFT, Cause.COVARIATE_DRIFT, Cause.PROMPT_REGRESSION,
                              Cause.BAD_MODEL_VERSION, Cause.UPSTREAM_CHANGE}),
}


def analyze(evidence: Evidence) -> list[Finding]:
    """Run every analyzer and return the supported findings, best first (a specific cause outranks drift)."""
    findings: list[Finding] = []
    for analyzer in ANALYZERS:
        produced = analyzer(evidence)
        findings.extend(produced if isinstance(produced, list) else [produced])
    explained = set().union(*(EXPLAINS.get(check, frozenset(Cause)) for check in evidence.checks)) \
        if evidence.checks else set(Cause)
    for finding in findings:
        if finding.confidence and finding.cause not in explained:
            finding.against.append(f"does not explain a {'/'.join(evidence.checks)} alert")
            finding.confidence *= 0.5
    for finding in findings:
        finding.confidence = round(min(0.99, finding.confidence), 3)
    supported = [f for f in findings if f.confidence >= SUPPORTED and f.supporting]
    return sorted(supported, key=lambda f: -f.confidence) or [Finding(
        cause=Cause.HARMLESS, confidence=0.3, scope={"model": evidence.model, "version": evidence.version},
        supporting=["no analyzer found support for any cause"], refs=_base(evidence))]

"""Pick the action that fits a cause and its scope, and check recovery from fresh telemetry afterwards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agents.rca.analyzers import Cause

# Causes where no fleet action helps: fix upstream, fix the infrastructure, or just watch.
MONITOR_ONLY = frozenset({Cause.UPSTREAM_CHANGE, Cause.INFRASTRUCTURE, Cause.HARMLESS, Cause.COHORT_FAULT})


def plan_action(finding: dict[str, Any], *, incident_id: str, now: float,
                lookback_hours: float, attempt: int = 0) -> dict[str, Any] | None:
    """Return a ProposalCreate body for the top finding, or None (monitor only)."""
    cause, scope = Cause(finding["cause"]), finding["scope"]
    refs = finding.get("refs", [])[:50]
    action: dict[str, Any] | None = None
    effect = ""
    if cause in MONITOR_ONLY:
        return None
    if cause == Cause.BAD_MODEL_VERSION and scope.get("rollout_id"):
        if scope.get("canary"):
            action = {"kind": "rollout.abort", "rollout_id": scope["rollout_id"]}
            effect = "the canary wave stops and returns to the previous version; the error rate falls back"
        else:
            action = {"kind": "rollout.rollback", "rollout_id": scope["rollout_id"],
                      "strategy": {"kind": "all_at_once"}}
            effect = "devices return to the previous version; the error rate falls back to its baseline"
    elif cause == Cause.DEVICE_FAULT and scope.get("device_id"):
        action = {"kind": "device.quarantine", "device_id": scope["device_id"]}
        effect = "the faulty device leaves rollouts and fleet drift; the fleet error rate falls back"
    elif cause == Cause.PROMPT_REGRESSION and scope.get("prompt"):
        action = {"kind": "prompt.label_move", "prompt": scope["prompt"], "label": scope["label"],
                  "version": scope["from_version"]}
        effect = f"label {scope['label']} serves v{scope['from_version']} again; eval scores return"
    elif cause in (Cause.COVARIATE_DRIFT, Cause.CONCEPT_DRIFT) and scope.get("version"):
        cohort = {"device_group": scope["device_group"]} if scope.get("device_group") else {}
        action = {"kind": "retrain.request", "model": scope["model"], "version": scope["version"],
                  "window_start": datetime.fromtimestamp(now - lookback_hours * 3600, UTC).isoformat(),
                  "window_end": datetime.fromtimestamp(now, UTC).isoformat(), "cohort": cohort}
        effect = "a model retrained on the drifted window; no immediate change to the fleet"
    if action is None:
        return None
    target = action.get("rollout_id") or action.get("device_id") or action.get("prompt") or action.get("model")
    # A re-proposal (the first went stale) needs its own key, else the API returns the closed one again.
    suffix = f".r{attempt}" if attempt else ""
    return {"action": action, "incident_id": incident_id, "evidence": refs, "expected_effect": effect,
            "risk": "low" if action["kind"] in ("retrain.request", "device.quarantine") else "medium",
            "idempotency_key": f"{incident_id}.{action['kind']}.{target}"[:190] + suffix}


def judge_recovery(windows: list[dict[str, Any]], *, proposal: dict[str, Any], executed_at: float,
                   min_windows: int, max_error_rate: float) -> tuple[str, str]:
    """Return (outcome, note) from windows that began after execution: recovered, not_recovered or unknown."""
    params = proposal.get("params") or {}
    # A window that began before the action took effect mixes calls from before and after it: with 50 devices the
    # first windows to close after a rollback are mostly such, and judged the rollback "not recovered".
    fresh = [w for w in windows if float(w["window_start"]) >= executed_at]
    if params.get("device_id"):
        fresh = [w for w in fresh if w["device_id"] != params["device_id"]]
    if len(fresh) < min_windows:
        return "unknown", f"only {len(fresh)} window(s) begun since execution, {min_windows} needed"
    calls = sum(int(w.get("calls") or 0) for w in fresh)
    errors = sum(int(w.get("errors") or 0) for w in fresh)
    rate = errors / calls if calls else 0.0
    note = f"{len(fresh)} windows begun since execution, error rate {rate:.1%} (threshold {max_error_rate:.1%})"
    return ("recovered" if rate <= max_error_rate else "not_recovered"), note

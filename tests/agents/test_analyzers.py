"""Each analyzer on hand-built evidence: what supports a cause, what argues against it, and the scope."""

from __future__ import annotations

from typing import Any

from agents.rca.analyzers import (
    Cause,
    analyze,
    bad_model_version,
    cohort_fault,
    concept_drift,
    device_fault,
    drift,
    harmless,
    infrastructure,
    prompt_regression,
)
from agents.rca.evidence import CohortStats, DeviceStats, Evidence, FeatureSignal
from agents.remediation.actions import judge_recovery, plan_action


def _stats(error: float = 0.0, drifted: tuple[str, ...] = (), out_of_range: float = 0.0, **scope: Any) -> CohortStats:
    return CohortStats(scope=scope, windows=10, devices=4, error_rate=error, drifted=[
        FeatureSignal(feature=f, psi=0.5, drifted=True, out_of_range_rate=out_of_range) for f in drifted])


def _evidence(**fields: Any) -> Evidence:
    base: dict[str, Any] = {"model": "m", "version": 2, "alert_ids": ["al_1"], "checks": ["error_rate"],
                            "features": []}
    return Evidence(**(base | fields))


ROLLOUT = {"id": "ro_1", "kind": "deploy", "state": "succeeded", "wave_plan": [1, 3], "current_wave": 1}


def test_bad_model_version_needs_the_previous_version_healthy() -> None:
    worse = _evidence(current=_stats(0.2), previous=_stats(0.01), previous_version=1, rollout=ROLLOUT)
    finding = bad_model_version(worse)
    assert finding.confidence >= 0.7 and finding.scope["rollout_id"] == "ro_1" and "canary" not in finding.scope
    both = _evidence(current=_stats(0.2), previous=_stats(0.2), previous_version=1, rollout=ROLLOUT)
    assert bad_model_version(both).confidence < 0.3 and bad_model_version(both).against
    assert bad_model_version(_evidence(current=_stats(0.2))).confidence == 0


def test_a_regression_mid_rollout_is_scoped_to_the_canary() -> None:
    canary = {**ROLLOUT, "state": "in_progress", "current_wave": 0}
    finding = bad_model_version(_evidence(current=_stats(0.2), previous=_stats(0.0), previous_version=1,
                                          rollout=canary))
    assert finding.scope["canary"] is True
    plan = plan_action(finding.model_dump(mode="json"), incident_id="inc_1", now=1e9, lookback_hours=6)
    assert plan is not None and plan["action"] == {"kind": "rollout.abort", "rollout_id": "ro_1"}


def test_drift_tells_covariate_shift_from_a_unit_change_upstream() -> None:
    covariate, upstream = drift(_evidence(checks=["feature_drift"], current=_stats(drifted=("temperature",))))
    assert covariate.confidence >= 0.5 and upstream.confidence == 0
    unit = _evidence(checks=["feature_drift"], current=_stats(drifted=("pressure",), out_of_range=0.9),
                     previous=_stats(drifted=("pressure",), out_of_range=0.9), previous_version=1)
    covariate, upstream = drift(unit)
    assert covariate.confidence == 0 and upstream.confidence >= 0.85 and upstream.scope["features"] == ["pressure"]


def test_concept_drift_is_accuracy_down_without_input_drift() -> None:
    performance = {"accuracy": 0.6, "floor": 0.85, "labelled": 500}
    assert concept_drift(_evidence(checks=["performance"], performance=performance, current=_stats())).confidence >= 0.8
    with_drift = concept_drift(_evidence(performance=performance, current=_stats(drifted=("a",))))
    assert with_drift.confidence < 0.5 and with_drift.against


def test_one_faulty_device_among_healthy_ones() -> None:
    devices = [DeviceStats(device_id=f"d{i}", group="g", calls=100, errors=80 if i == 3 else 1) for i in range(5)]
    finding = device_fault(_evidence(devices=devices))
    assert finding.scope["device_id"] == "d3" and finding.confidence >= 0.8
    two_bad = [d.model_copy(update={"errors": 80}) if d.device_id in ("d1", "d3") else d for d in devices]
    assert device_fault(_evidence(devices=two_bad)).confidence == 0


def test_one_cohort_errs_while_the_others_are_healthy() -> None:
    groups = [_stats(0.3, device_group="south"), _stats(0.0, device_group="north"), _stats(0.0, device_group="east")]
    finding = cohort_fault(_evidence(groups=groups))
    assert finding.scope["device_group"] == "south" and finding.confidence >= 0.6


def test_prompt_regression_needs_a_label_move_and_is_stronger_with_a_failed_eval() -> None:
    move = {"seq": 7, "prompt": "support", "label": "production", "from_version": 1, "to_version": 2,
            "version_id": "pv_2", "at": 0.0}
    failed = [{"id": "ev_1", "prompt_version_id": "pv_2", "passed": False, "metrics": {}}]
    finding = prompt_regression(_evidence(prompt_moves=[move], eval_runs=failed))
    assert finding.confidence >= 0.85 and finding.scope["from_version"] == 1
    plan = plan_action(finding.model_dump(mode="json"), incident_id="inc_1", now=1e9, lookback_hours=6)
    assert plan is not None and plan["action"] == {"kind": "prompt.label_move", "prompt": "support",
                                                   "label": "production", "version": 1}
    assert prompt_regression(_evidence()).confidence == 0


def test_infrastructure_hits_every_version_without_drift() -> None:
    finding = infrastructure(_evidence(checks=["latency"], current=_stats(0.0), previous=_stats(0.0),
                                       previous_version=1))
    assert finding.confidence >= 0.7
    assert infrastructure(_evidence(checks=["latency"], current=_stats(drifted=("a",)))).confidence == 0


def test_seasonal_drift_without_harm_is_harmless_and_gets_no_proposal() -> None:
    seasonal = _evidence(checks=["feature_drift"], current=_stats(drifted=("humidity",)),
                         seasonal=_stats(drifted=("humidity",)))
    finding = harmless(seasonal)
    assert finding.confidence >= 0.9
    top = analyze(seasonal)[0]
    assert top.cause == Cause.HARMLESS
    assert plan_action(top.model_dump(mode="json"), incident_id="inc_1", now=1e9, lookback_hours=6) is None
    harmful = seasonal.model_copy(update={"performance": {"accuracy": 0.5}})
    assert harmless(harmful).confidence == 0


def test_no_support_means_harmless_with_low_confidence() -> None:
    findings = analyze(_evidence(checks=["feature_drift"], current=_stats()))
    assert [f.cause for f in findings] == [Cause.HARMLESS] and findings[0].confidence < 0.5


def test_recovery_counts_only_windows_after_execution_and_leaves_the_quarantined_device_out() -> None:
    windows = [{"device_id": "d1", "window_start": 190.0, "window_end": 200.0, "calls": 10, "errors": 0},
               {"device_id": "d2", "window_start": 200.0, "window_end": 210.0, "calls": 10, "errors": 1},
               {"device_id": "d3", "window_start": 210.0, "window_end": 220.0, "calls": 10, "errors": 10},
               {"device_id": "d1", "window_start": 40.0, "window_end": 50.0, "calls": 10, "errors": 10}]
    proposal = {"params": {"device_id": "d3"}}
    assert judge_recovery(windows, proposal=proposal, executed_at=100, min_windows=2, max_error_rate=0.1)[0] == \
        "recovered"
    assert judge_recovery(windows, proposal=proposal, executed_at=100, min_windows=3, max_error_rate=0.1)[0] == \
        "unknown"
    assert judge_recovery(windows, proposal={"params": {}}, executed_at=100, min_windows=2,
                          max_error_rate=0.1)[0] == "not_recovered"


def test_recovery_ignores_windows_that_began_before_the_action_took_effect() -> None:
    # The 50-device demo's rollback: the first windows to close after it straddle it and still carry bad calls.
    straddling = [{"device_id": f"d{i}", "window_start": 99.0, "window_end": 101.0, "calls": 20, "errors": 7}
                  for i in range(5)]
    after = [{"device_id": f"d{i}", "window_start": 101.0, "window_end": 103.0, "calls": 20, "errors": 0}
             for i in range(3)]
    assert judge_recovery(straddling, proposal={"params": {}}, executed_at=100, min_windows=3,
                          max_error_rate=0.05)[0] == "unknown"
    assert judge_recovery(straddling + after, proposal={"params": {}}, executed_at=100, min_windows=3,
                          max_error_rate=0.05)[0] == "recovered"
    still_bad = [{**w, "errors": 7} for w in after]
    assert judge_recovery(straddling + still_bad, proposal={"params": {}}, executed_at=100, min_windows=3,
                          max_error_rate=0.05)[0] == "not_recovered"


def test_with_two_groups_the_bad_one_is_compared_with_the_other() -> None:
    finding = cohort_fault(_evidence(groups=[_stats(0.4, device_group="south"), _stats(0.0, device_group="north")]))
    assert finding.scope["device_group"] == "south"

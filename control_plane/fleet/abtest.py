"""A/B tests on the edge: hash a group into arms, ship each arm its version, compare outcomes from delayed labels.

An experiment is one rollout whose targets carry their arm's artifact, so manifests, signing, health gates, abort
and rollback are the rollout engine's. Outcomes are the labels API's confusion counts of windows a device served
with its arm's version; the statistics and the decision rule live in abtest_stats.py.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.schemas import Principal
from control_plane.db.base import new_id, utcnow
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.fleet import rollouts
from control_plane.fleet import service as fleet
from control_plane.fleet.abtest_models import Experiment, ExperimentAssignment
from control_plane.fleet.abtest_schemas import ArmRead, ComparisonRead, DistributionRead, ExperimentRead
from control_plane.fleet.abtest_stats import (
    ArmCounts,
    assign,
    decide,
    newcombe_interval,
    prediction_test,
    wilson_interval,
)
from control_plane.fleet.abtest_stats import required_per_arm as sample_size
from control_plane.fleet.manifests import ManifestFactory
from control_plane.fleet.models import Deployment, Rollout
from control_plane.fleet.policy import ProtectedFleet, check_deployment
from control_plane.fleet.schemas import DeploymentCreate, RolloutState, Selector, Strategy, StrategyKind
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.registry import artifacts as registry_artifacts
from control_plane.registry import service as registry
from control_plane.telemetry.lookup import BaselineCache
from control_plane.telemetry.models import GroundTruthLabel, TelemetryWindowRow

RUNNING, DECIDED, INCONCLUSIVE, PROMOTED, STOPPED = "running", "decided", "inconclusive", "promoted", "stopped"
# A test whose rollout ended like this no longer has its arms in place: it stops without a decision.
STOPPING_ROLLOUT_STATES = frozenset({RolloutState.ABORTED.value, RolloutState.FAILED.value,
                                     RolloutState.ROLLED_BACK.value})
UNSEEN_CLASS = "(unseen)"


def create_experiment(*, session: Session, factory: ManifestFactory, request: DeploymentCreate, actor: str,
                      principal: Principal | None = None, policy: ProtectedFleet | None = None) -> Rollout:
    """Start an A/B test: assign devices to arms, refuse a split too small for the effect, roll every arm out."""
    design = request.strategy.ab
    assert design is not None and request.strategy.kind == StrategyKind.AB
    versions = [registry.get_version(session=session, model_name=request.model, version=arm.version)
                for arm in design.arms]
    artifacts = [registry_artifacts.pick_artifact(model_version=v, quantization=request.quantization)
                 for v in versions]
    devices = fleet.resolve_selector(session=session, selector=request.selector)
    if not devices:
        raise Invalid("the selector matches no device")
    # The id is made here, not at flush: unless a salt is given, the arm hash uses it.
    experiment = Experiment(id=new_id("exp"), model_name=request.model, state=RUNNING, created_by=actor,
                            selector=request.selector.model_dump(mode="json", exclude_none=True),
                            design=design.model_dump(mode="json"))
    assignment = assign(design.salt or experiment.id, [d.id for d in devices], [arm.weight for arm in design.arms])
    per_arm = Counter(arm for arm, _ in assignment.values())
    required = sample_size(design.baseline_rate, design.mde, design.alpha / (len(design.arms) - 1), design.power)
    devices_per_arm = [per_arm[i] for i in range(len(design.arms))]
    expected = [count * design.expected_samples_per_device for count in devices_per_arm]
    if min(expected) < required:
        raise Invalid(
            f"the split is too small for an effect of {design.mde:g}: arms get {devices_per_arm} devices, i.e. "
            f"{expected} labelled outcomes at {design.expected_samples_per_device} per device, but each arm needs "
            f"{required} (alpha {design.alpha:g}, power {design.power:g}, baseline rate {design.baseline_rate:g}); "
            "select more devices, rebalance the weights, expect more samples per device or a larger effect",
            devices_per_arm=devices_per_arm, expected_samples_per_arm=expected, required_per_arm=required)
    if principal is not None and policy is not None:
        for index, version in enumerate(versions):
            check_deployment(session, policy, principal, version, [d for d in devices if assignment[d.id][0] == index])
    for version, artifact in zip(versions, artifacts, strict=True):
        factory.template(session, version=version, artifact=artifact)  # Fail now if an artifact cannot run.
    strategy = request.strategy.model_dump(mode="json")
    if request.max_latency_ms is not None:
        strategy["max_latency_ms"] = request.max_latency_ms
    deployment = Deployment(model_version_id=versions[0].id, artifact_id=artifacts[0].id,
                            selector=experiment.selector, strategy=strategy, created_by=actor)
    session.add(deployment)
    session.flush()
    now = utcnow()
    # One wave: every arm starts together, so no arm collects outcomes earlier (or in other hours) than another.
    rollout = Rollout(deployment_id=deployment.id, kind="deploy", state=RolloutState.PENDING.value,
                      wave_plan=[len(devices)], failure_threshold=request.strategy.failure_threshold,
                      min_finished=request.strategy.min_finished, wave_timeout_s=request.strategy.wave_timeout_s,
                      created_by=actor, updated_at=now)
    session.add(rollout)
    session.flush()
    rollouts.add_targets(session, rollout, [(d.id, artifacts[assignment[d.id][0]].id, d.active_artifact_id)
                                            for d in devices])
    rollouts.cancel_superseded(session, [d.id for d in devices], rollout.id, now)
    experiment.rollout_id, experiment.deployment_id, experiment.updated_at = rollout.id, deployment.id, now
    session.add(experiment)
    session.flush()
    session.add_all([ExperimentAssignment(experiment_id=experiment.id, device_id=device_id, arm=arm,
                                          version=design.arms[arm].version, artifact_id=artifacts[arm].id,
                                          bucket=position) for device_id, (arm, position) in assignment.items()])
    session.flush()
    for artifact in artifacts:
        lineage.link(session, (NodeKind.ARTIFACT, artifact.id), (NodeKind.DEPLOYMENT, deployment.id), "deployed_as")
    lineage.link(session, (NodeKind.DEPLOYMENT, deployment.id), (NodeKind.ROLLOUT, rollout.id), "executed_by")
    audit.record(session, actor=actor, action="deployment.create", resource=("deployment", deployment.id),
                 data={"model": request.model, "versions": [a.version for a in design.arms],
                       "artifact_ids": [a.id for a in artifacts], "selector": deployment.selector,
                       "devices": len(devices)})
    audit.record(session, actor=actor, action="experiment.create", resource=("experiment", experiment.id),
                 data={"rollout_id": rollout.id, "design": experiment.design, "devices_per_arm": devices_per_arm,
                       "expected_samples_per_arm": expected, "required_per_arm": required})
    audit.record(session, actor=actor, action="rollout.create", resource=("rollout", rollout.id),
                 data={"kind": "deploy", "deployment_id": deployment.id, "wave_plan": rollout.wave_plan,
                       "strategy": strategy, "experiment_id": experiment.id})
    return rollouts.step(session, factory, rollout.id, now)


def get_experiment(*, session: Session, experiment_id: str, lock: bool = False) -> Experiment:
    """Return an experiment by its id (or its rollout's id), or raise NotFound."""
    query = select(Experiment).where((Experiment.id == experiment_id) | (Experiment.rollout_id == experiment_id))
    experiment = session.scalar(query.with_for_update() if lock else query)
    if experiment is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    return experiment


def list_experiments(*, session: Session, state: str | None = None, limit: int = 100) -> list[Experiment]:
    """Return experiments, newest first."""
    query = select(Experiment).order_by(Experiment.created_at.desc()).limit(limit)
    return list(session.scalars(query.where(Experiment.state == state) if state else query))


def _window_span(session: Session, experiment: Experiment) -> tuple[float, float]:
    """Return the epoch range whose windows belong to the test: from its start until a promotion replaced it."""
    end = float("inf")
    if experiment.promotion_rollout_id:
        promotion = session.get(Rollout, experiment.promotion_rollout_id)
        end = promotion.created_at.timestamp() if promotion is not None else end
    return experiment.created_at.timestamp(), end


def _labelled(session: Session, experiment: Experiment) -> dict[int, list[tuple[int, int]]]:
    """Return arm -> [(total, correct)] of labelled windows served with the arm's version, oldest first."""
    # Labels carry their window's model version and start, so they need no join with the windows.
    label, member = GroundTruthLabel, ExperimentAssignment
    since, until = _window_span(session, experiment)
    rows = session.execute(
        select(member.arm, label.total, label.correct)
        .join(member, (member.device_id == label.device_id) & (member.experiment_id == experiment.id))
        .where(label.model_name == experiment.model_name, label.model_version == member.version,
               label.window_start >= since, label.window_start < until)
        .order_by(label.window_start, label.device_id, label.window_seq))
    by_arm: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for arm, total, correct in rows:
        by_arm[int(arm)].append((int(total), int(correct)))
    return by_arm


def _predictions(session: Session, experiment: Experiment, baselines: BaselineCache) -> dict[int, Counter[str]]:
    """Return arm -> predicted class counts, merged from the output counters of the arm's telemetry sketches."""
    window, member = TelemetryWindowRow, ExperimentAssignment
    since, until = _window_span(session, experiment)
    rows = session.execute(
        select(member.arm, window.baseline_id, window.sketch)
        .join(member, (member.device_id == window.device_id) & (member.experiment_id == experiment.id))
        .where(window.model_name == experiment.model_name, window.model_version == member.version,
               window.window_start >= since, window.window_start < until))
    sums: dict[tuple[int, str], np.ndarray] = {}
    for arm, baseline_id, sketch in rows:
        layout = baselines.get(session, baseline_id)
        if layout is None or layout.baseline.output is None or layout.baseline.output.kind != "classes":
            continue
        key = (int(arm), baseline_id)
        if key not in sums:
            sums[key] = np.zeros(layout.length, dtype=np.int64)
        indices, counts = json.loads(sketch)
        np.add.at(sums[key], np.asarray(indices, dtype=np.int64), np.asarray(counts, dtype=np.int64))
    result: dict[int, Counter[str]] = defaultdict(Counter)
    for (arm, baseline_id), vector in sums.items():
        layout = baselines.get(session, baseline_id)
        assert layout is not None and layout.baseline.output is not None
        for value, count in zip(layout.baseline.output.values, vector[layout.field("output")], strict=True):
            result[arm][_class_name(value)] += int(count)
        # Classes the baseline never saw (another version's training predictions) are counted, not dropped.
        result[arm][UNSEEN_CLASS] += int(vector[layout.field("output_unseen")].sum())
    return result


def _class_name(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _horizon(windows: list[tuple[int, int]], required: int) -> ArmCounts:
    """Count outcomes up to (and with) the window that reaches `required`; later ones do not enter the decision."""
    n = correct = 0
    for total, right in windows:
        if n >= required:
            break
        n, correct = n + total, correct + right
    return ArmCounts(n=n, correct=correct, n_total=sum(total for total, _ in windows))


def report(session: Session, experiment: Experiment, baselines: BaselineCache) -> ExperimentRead:
    """Compute where the test stands: per-arm n, rates with Wilson intervals, tests against the control."""
    design = experiment.design
    arms_design: list[dict[str, Any]] = design["arms"]
    comparisons = len(arms_design) - 1
    per_comparison = design["alpha"] / comparisons
    required = sample_size(design["baseline_rate"], design["mde"], per_comparison, design["power"])
    labelled = _labelled(session, experiment)
    counts = [_horizon(labelled.get(i, []), required) for i in range(len(arms_design))]
    decision = decide(counts, required=required, alpha=design["alpha"])
    predicted = _predictions(session, experiment, baselines)
    devices = Counter(session.scalars(select(ExperimentAssignment.arm)
                                      .where(ExperimentAssignment.experiment_id == experiment.id)))
    arms = []
    for i, (spec, arm) in enumerate(zip(arms_design, counts, strict=True)):
        interval = wilson_interval(arm.correct, arm.n, per_comparison)
        arms.append(ArmRead(index=i, version=spec["version"], weight=spec["weight"], devices=devices[i], n=arm.n,
                            correct=arm.correct, rate=arm.correct / arm.n if arm.n else None,
                            ci_low=interval[0] if interval else None, ci_high=interval[1] if interval else None,
                            n_total=arm.n_total, predictions=dict(sorted(predicted.get(i, Counter()).items()))))
    compared = []
    control = counts[0]
    for i, (arm, test, significant) in enumerate(zip(counts[1:], decision.tests, decision.significant,
                                                     strict=True), start=1):
        interval = newcombe_interval(control.correct, control.n, arm.correct, arm.n, per_comparison)
        difference = arm.correct / arm.n - control.correct / control.n if arm.n and control.n else None
        compared.append(ComparisonRead(arm=i, control=0, difference=difference,
                                       ci_low=interval[0] if interval else None,
                                       ci_high=interval[1] if interval else None,
                                       method=test.method if test else None, statistic=test.statistic if test else None,
                                       p_value=test.p_value if test else None,
                                       significant=significant and decision.horizon_reached))
    distribution = prediction_test([predicted.get(i, Counter()) for i in range(len(arms_design))])
    recorded = experiment.state != RUNNING
    winner_arm = experiment.winner_arm if recorded else decision.winner
    return ExperimentRead(
        id=experiment.id, rollout_id=experiment.rollout_id, deployment_id=experiment.deployment_id,
        model=experiment.model_name, state=experiment.state, design=design, required_per_arm=required,
        alpha_per_comparison=per_comparison, horizon_reached=decision.horizon_reached, arms=arms,
        comparisons=compared,
        predictions=DistributionRead(chi2=distribution.chi2, dof=distribution.dof, p_value=distribution.p_value,
                                     classes=distribution.classes) if distribution else None,
        winner=None if winner_arm is None else {"arm": winner_arm, "version": arms_design[winner_arm]["version"]},
        reason=(experiment.reason or "") if recorded else decision.reason, decided_at=experiment.decided_at,
        proposal_id=experiment.proposal_id, promotion_rollout_id=experiment.promotion_rollout_id,
        created_by=experiment.created_by, created_at=experiment.created_at)


def record_decision(session: Session, experiment: Experiment, read: ExperimentRead, actor: str) -> bool:
    """Freeze the decision of a running experiment whose arms all reached the horizon; return whether it did."""
    if experiment.state != RUNNING or not read.horizon_reached:
        return False
    now = utcnow()
    experiment.state = DECIDED if read.winner is not None else INCONCLUSIVE
    experiment.winner_arm = read.winner["arm"] if read.winner else None
    experiment.winner_version = read.winner["version"] if read.winner else None
    experiment.reason, experiment.decided_at, experiment.updated_at = read.reason, now, now
    session.flush()
    audit.record(session, actor=actor, action=f"experiment.{experiment.state}", resource=("experiment", experiment.id),
                 data={"winner": read.winner, "reason": read.reason, "required_per_arm": read.required_per_arm,
                       "arms": [{"version": a.version, "n": a.n, "correct": a.correct} for a in read.arms],
                       "p_values": [c.p_value for c in read.comparisons]})
    return True


def stop_if_rollout_ended(session: Session, experiment: Experiment, actor: str) -> bool:
    """Stop a running test whose rollout was aborted, failed or rolled back; return whether it did."""
    rollout = session.get(Rollout, experiment.rollout_id)
    if experiment.state != RUNNING or rollout is None or rollout.state not in STOPPING_ROLLOUT_STATES:
        return False
    experiment.state, experiment.updated_at = STOPPED, utcnow()
    experiment.reason = f"stopped without a decision: its rollout {rollout.id} is {rollout.state}"
    session.flush()
    audit.record(session, actor=actor, action="experiment.stopped", resource=("experiment", experiment.id),
                 data={"rollout_id": rollout.id, "rollout_state": rollout.state})
    return True


def promote(session: Session, factory: ManifestFactory, experiment_id: str, version: int, strategy: Strategy,
            actor: str, reason: str) -> Rollout:
    """Roll the winning version out to the experiment's whole selector (waves, health gates); once."""
    experiment = get_experiment(session=session, experiment_id=experiment_id, lock=True)
    if experiment.promotion_rollout_id:
        raise Conflict(f"experiment {experiment.id} was already promoted by rollout {experiment.promotion_rollout_id}")
    if experiment.state != DECIDED or experiment.winner_version != version:
        raise Conflict(f"experiment {experiment.id} is {experiment.state} with winner version "
                       f"{experiment.winner_version}; only its decided winner can be promoted")
    rollout = fleet.create_deployment(session=session, factory=factory, actor=actor, request=DeploymentCreate(
        model=experiment.model_name, version=version, selector=Selector.model_validate(experiment.selector),
        strategy=strategy))
    rollout.reason = reason
    experiment.state, experiment.promotion_rollout_id, experiment.updated_at = PROMOTED, rollout.id, utcnow()
    session.flush()
    lineage.link(session, (NodeKind.ROLLOUT, experiment.rollout_id), (NodeKind.ROLLOUT, rollout.id), "promoted_by")
    audit.record(session, actor=actor, action="experiment.promoted", resource=("experiment", experiment.id),
                 data={"version": version, "rollout_id": rollout.id, "reason": reason})
    return rollout


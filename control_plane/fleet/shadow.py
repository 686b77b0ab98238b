"""Shadow rollouts: compare the staged candidate with the active model per cohort, gate, then start the canary.

A shadow rollout stages the candidate on every target with shadow settings (devices score a sample of live
inputs with it, never answering). Their telemetry windows carry shadow sketches (control_plane/telemetry/
shadow.py). Once every target has staged, each engine step evaluates the promotion gate per cohort: a cohort
passes when the Wilson lower bound of agreement is at least `min_agreement` and the upper bound of the
candidate's p95 latency is at most `max_latency_ms`; it fails when the data already exclude that (agreement
upper bound below, p95 lower bound above) or when a device stopped its shadow (too slow, errors). The gate
passes when every cohort passes over at least `min_windows` windows; then the shadow rollout succeeds and a
waved canary of the same artifact starts on the staged devices. Still undecided after `max_wait_s`: failed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.errors import Invalid, NotFound
from control_plane.fleet import rollouts
from control_plane.fleet.manifests import ManifestFactory
from control_plane.fleet.models import Deployment, Device, DeviceEvent, Rollout, RolloutTarget
from control_plane.fleet.schemas import (
    TERMINAL_ROLLOUT_STATES,
    RolloutState,
    ShadowCohortRead,
    ShadowGate,
    ShadowReportRead,
    Strategy,
    StrategyKind,
    TargetState,
)
from control_plane.fleet.shadow_stats import Interval, merge, quantile_bounds, wilson
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.telemetry.models import ShadowWindowRow
from control_plane.telemetry.shadow import ERROR_BUCKETS, LATENCY_BUCKETS_MS

NO_GROUP = "(no group)"
# The gate reads every sketch of the rollout: evaluated at most this often (the engine steps every second).
GATE_INTERVAL_S = 5.0
_LENGTH = len(LATENCY_BUCKETS_MS) + 1


def _interval(value: Interval) -> dict[str, float | None]:
    return {"estimate": value.estimate, "lower": value.lower, "upper": value.upper}


def _ms(value: Interval) -> dict[str, float | None]:
    # JSON has no infinity: an open-ended bound (beyond the last bucket) is reported as None with the edge.
    def finite(x: float | None) -> float | None:
        return None if x is None or x == float("inf") else x
    return {"estimate": finite(value.estimate), "lower": finite(value.lower), "upper": finite(value.upper)}


def _cohort(name: str, rows: list[ShadowWindowRow], stopped: Counter[str], gate: ShadowGate) -> ShadowCohortRead:
    agree, scored = sum(r.agree for r in rows), sum(r.rows for r in rows)
    samples, errors = sum(r.samples for r in rows), sum(r.errors for r in rows)
    latency = merge([json.loads(r.latency) for r in rows], _LENGTH)
    active = merge([json.loads(r.active_latency) for r in rows], _LENGTH)
    labels: Counter[str] = Counter()
    for row in rows:
        labels.update(json.loads(row.labels))
    regression = [json.loads(r.error_counts) for r in rows if r.error_counts]
    agreement = wilson(agree, scored, gate.confidence)
    p95 = quantile_bounds(latency, LATENCY_BUCKETS_MS, 0.95, gate.confidence)
    reasons: list[str] = []
    if stopped:
        reasons.append("shadow stopped on " + ", ".join(f"{n} device(s): {why}" for why, n in sorted(stopped.items())))
    if agreement.upper is not None and agreement.upper < gate.min_agreement:
        reasons.append(f"agreement {agreement.estimate:.3f} (CI {agreement.lower:.3f}-{agreement.upper:.3f}) "
                       f"< {gate.min_agreement}")
    if p95.lower is not None and p95.lower > gate.max_latency_ms:
        reasons.append(f"candidate p95 > {p95.lower:g} ms (budget {gate.max_latency_ms:g} ms)")
    passed = (agreement.lower is not None and agreement.lower >= gate.min_agreement
              and p95.upper is not None and p95.upper <= gate.max_latency_ms)
    verdict = "fail" if reasons else "pass" if passed else "inconclusive"
    return ShadowCohortRead(
        cohort=name, devices=len({r.device_id for r in rows}), windows=len(rows), samples=samples, rows=scored,
        agree=agree, agreement=_interval(agreement), error_rate=_interval(wilson(errors, samples, gate.confidence)),
        candidate_p50_ms=_ms(quantile_bounds(latency, LATENCY_BUCKETS_MS, 0.5, gate.confidence)),
        candidate_p95_ms=_ms(p95), active_p50_ms=_ms(quantile_bounds(active, LATENCY_BUCKETS_MS, 0.5,
                                                                     gate.confidence)),
        active_p95_ms=_ms(quantile_bounds(active, LATENCY_BUCKETS_MS, 0.95, gate.confidence)),
        dropped=sum(r.dropped for r in rows), stopped=dict(stopped), candidate_labels=dict(labels.most_common(100)),
        error_counts=merge(regression, len(ERROR_BUCKETS) + 1) if regression else None, verdict=verdict,
        reasons=reasons)


def _strategy(session: Session, rollout: Rollout) -> tuple[Deployment, Strategy]:
    deployment = session.get(Deployment, rollout.deployment_id)
    if deployment is None or deployment.strategy.get("kind") != StrategyKind.SHADOW.value:
        raise Invalid(f"rollout {rollout.id} is not a shadow rollout")
    fields = {k: v for k, v in deployment.strategy.items() if k in Strategy.model_fields}
    return deployment, Strategy.model_validate(fields)


def _stopped_devices(session: Session, rollout_id: str) -> dict[str, tuple[str, str]]:
    """Return device -> (stop reason, cohort) for devices that reported shadow_stopped for this rollout."""
    events = session.execute(select(DeviceEvent.device_id, DeviceEvent.payload, Device.group_name)
                             .join(Device, Device.id == DeviceEvent.device_id).where(
        DeviceEvent.rollout_id == rollout_id, DeviceEvent.state == "shadow_stopped", DeviceEvent.accepted.is_(True)))
    stopped = {}
    for device, payload, group in events:
        try:  # the device's own reason is in the accepted message (the column holds refusal reasons)
            reason = json.loads(payload).get("reason")
        except (ValueError, AttributeError):
            reason = None
        reason = reason if isinstance(reason, str) and 0 < len(reason) <= 40 else "shadow_stopped"
        stopped[str(device)] = (reason, group or NO_GROUP)
    return stopped


def _label_cohorts(session: Session, device_ids: set[str], key: str) -> dict[str, str]:
    """Return device -> "key=value" (or "(no key)") for a comparison by a device label instead of the group."""
    found = {str(d): labels for d, labels in session.execute(
        select(Device.id, Device.labels).where(Device.id.in_(sorted(device_ids))))}
    return {d: f"{key}={found[d][key]}" if isinstance(found.get(d), dict) and key in found[d] else f"(no {key})"
            for d in device_ids}


def report(session: Session, rollout_id: str, *, now: datetime | None = None,
           by_label: str | None = None) -> ShadowReportRead:
    """Compare the candidate with the active model per cohort and say what the promotion gate decides.

    Cohorts are device groups (what the gate judges); `by_label` regroups the same sketches by a device label
    for a look at another cut (the verdict stays the gate's, per group).
    """
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} not found")
    shadow_rollout = rollout
    if rollout.kind == "canary":  # the canary's view: the shadow phase that started it
        shadow_rollout = session.scalars(select(Rollout).where(
            Rollout.deployment_id == rollout.deployment_id, Rollout.kind == "shadow").limit(1)).first() or rollout
    _, strategy = _strategy(session, shadow_rollout)
    assert strategy.gate is not None and strategy.shadow is not None
    gate = strategy.gate
    rows = list(session.scalars(select(ShadowWindowRow).where(ShadowWindowRow.rollout_id == shadow_rollout.id)
                                .order_by(ShadowWindowRow.window_start)))
    stopped = _stopped_devices(session, shadow_rollout.id)
    by_cohort: dict[str, list[ShadowWindowRow]] = defaultdict(list)
    for row in rows:
        by_cohort[row.device_group or NO_GROUP].append(row)
        if row.stopped:
            stopped.setdefault(row.device_id, (row.stopped, row.device_group or NO_GROUP))
    stops: dict[str, Counter[str]] = defaultdict(Counter)
    for reason, cohort in stopped.values():
        stops[cohort][reason] += 1
    for name in stops:
        by_cohort.setdefault(name, [])
    cohorts = [_cohort(name, by_cohort[name], stops[name], gate) for name in sorted(by_cohort)]
    verdict, reasons = _decide(cohorts, gate, len(rows), shadow_rollout, now or utcnow())
    if by_label is not None:
        names = _label_cohorts(session, {r.device_id for r in rows} | set(stopped), by_label)
        regrouped: dict[str, list[ShadowWindowRow]] = defaultdict(list)
        for row in rows:
            regrouped[names[row.device_id]].append(row)
        label_stops: dict[str, Counter[str]] = defaultdict(Counter)
        for device, (reason, _) in stopped.items():
            label_stops[names[device]][reason] += 1
            regrouped.setdefault(names[device], [])
        cohorts = [_cohort(name, regrouped[name], label_stops[name], gate) for name in sorted(regrouped)]
    if verdict == "waiting" and shadow_rollout.state in TERMINAL_ROLLOUT_STATES:
        verdict, reasons = "ended", [f"the rollout {shadow_rollout.state} before the gate decided: "
                                     f"{shadow_rollout.reason or 'no reason given'}"[:500]]
    candidate = rows[-1] if rows else None
    canary = session.scalars(select(Rollout.id).where(Rollout.deployment_id == shadow_rollout.deployment_id,
                                                      Rollout.kind == "canary").limit(1)).first()
    return ShadowReportRead(
        rollout_id=shadow_rollout.id, state=shadow_rollout.state,
        candidate={} if candidate is None else {"name": candidate.candidate_name,
                                                "version": candidate.candidate_version,
                                                "sha256": candidate.candidate_sha256},
        settings=strategy.shadow.model_dump(), gate=gate.model_dump(), confidence=gate.confidence,
        latency_buckets_ms=list(LATENCY_BUCKETS_MS), error_buckets=list(ERROR_BUCKETS), windows=len(rows),
        verdict=verdict, reasons=reasons, canary_rollout_id=canary, cohorts=cohorts)


def _decide(cohorts: list[ShadowCohortRead], gate: ShadowGate, windows: int, rollout: Rollout,
            now: datetime) -> tuple[str, list[str]]:
    failed = [f"{c.cohort}: {'; '.join(c.reasons)}" for c in cohorts if c.verdict == "fail"]
    if failed:
        return "fail", failed
    if windows >= gate.min_windows and cohorts and all(c.verdict == "pass" for c in cohorts):
        return "pass", [f"{c.cohort}: agreement >= {c.agreement['lower']:.3f}, candidate p95 <= "
                        f"{c.candidate_p95_ms['upper']:g} ms over {c.windows} windows" for c in cohorts]
    waiting = [f"{windows} of {gate.min_windows} windows"] + [
        f"{c.cohort}: not yet conclusive (agreement CI {c.agreement['lower']}-{c.agreement['upper']}, "
        f"p95 CI {c.candidate_p95_ms['lower']}-{c.candidate_p95_ms['upper']} ms)"
        for c in cohorts if c.verdict == "inconclusive"]
    started = rollout.wave_started_at
    if started is not None and now >= _aware(started) + timedelta(seconds=gate.max_wait_s):
        return "fail", [f"inconclusive after {gate.max_wait_s:g}s: " + "; ".join(waiting)]
    return "waiting", waiting


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def evaluate(session: Session, factory: ManifestFactory, rollout: Rollout, now: datetime) -> Rollout:
    """Apply the promotion gate to a fully staged shadow rollout (under its row lock): wait, fail, or promote."""
    last = rollout.updated_at  # the last wave opening, transition or gate evaluation
    if last is not None and now < _aware(last) + timedelta(seconds=GATE_INTERVAL_S):
        return rollout
    shadow_report = report(session, rollout.id, now=now)
    numbers = {"windows": shadow_report.windows, "cohorts": [
        {"cohort": c.cohort, "agreement": c.agreement, "candidate_p95_ms": c.candidate_p95_ms, "rows": c.rows,
         "windows": c.windows, "stopped": c.stopped, "verdict": c.verdict} for c in shadow_report.cohorts]}
    if shadow_report.verdict == "waiting":
        rollout.updated_at = now  # evaluated: the next look is GATE_INTERVAL_S away
        session.flush()
        return rollout
    if shadow_report.verdict == "fail":
        rollouts.transition(session, rollout, RolloutState.FAILED, rollouts.SYSTEM_ACTOR,
                            ("shadow gate failed: " + " | ".join(shadow_report.reasons))[:2000], now, **numbers)
        return rollout
    _, strategy = _strategy(session, rollout)
    staged = list(session.scalars(select(RolloutTarget).where(
        RolloutTarget.rollout_id == rollout.id, RolloutTarget.state == TargetState.STAGED.value)
        .order_by(RolloutTarget.position)))
    rollouts.transition(session, rollout, RolloutState.SUCCEEDED, rollouts.SYSTEM_ACTOR,
                        ("shadow gate passed: " + " | ".join(shadow_report.reasons))[:2000], now, **numbers)
    waves = Strategy(kind=StrategyKind.WAVES, waves=strategy.then_waves, failure_threshold=strategy.failure_threshold,
                     min_finished=strategy.min_finished, wave_timeout_s=strategy.wave_timeout_s)
    canary = Rollout(deployment_id=rollout.deployment_id, kind="canary", state=RolloutState.PENDING.value,
                     wave_plan=rollouts.wave_plan(waves, len(staged)), failure_threshold=waves.failure_threshold,
                     min_finished=waves.min_finished, wave_timeout_s=waves.wave_timeout_s,
                     reason=f"promoted from shadow rollout {rollout.id}", created_by=rollouts.SYSTEM_ACTOR,
                     updated_at=now)
    session.add(canary)
    session.flush()
    rollouts.add_targets(session, canary, [(t.device_id, t.artifact_id, t.previous_artifact_id) for t in staged])
    rollouts.cancel_superseded(session, [t.device_id for t in staged], canary.id, now)
    lineage.link(session, (NodeKind.ROLLOUT, rollout.id), (NodeKind.ROLLOUT, canary.id), "promoted_to")
    lineage.link(session, (NodeKind.DEPLOYMENT, rollout.deployment_id), (NodeKind.ROLLOUT, canary.id), "executed_by")
    audit.record(session, actor=rollouts.SYSTEM_ACTOR, action="rollout.create", resource=("rollout", canary.id),
                 data={"kind": "canary", "shadow_rollout_id": rollout.id, "devices": len(staged),
                       "wave_plan": canary.wave_plan, "gate": strategy.gate.model_dump() if strategy.gate else None,
                       **numbers})
    rollouts.step(session, factory, canary.id, now)
    return rollout


def summaries(session: Session, model: str, version: int, since: float, until: float,
              device_group: str | None = None, limit: int = 5) -> list[dict[str, Any]]:
    """Return condensed comparisons of the newest shadow rollouts that ran `model` v`version` as the candidate."""
    query = (select(ShadowWindowRow.rollout_id, func.max(ShadowWindowRow.window_end))
             .where(ShadowWindowRow.candidate_name == model, ShadowWindowRow.candidate_version == version,
                    ShadowWindowRow.window_end >= since, ShadowWindowRow.window_start <= until)
             .group_by(ShadowWindowRow.rollout_id).order_by(func.max(ShadowWindowRow.window_end).desc()).limit(limit))
    if device_group is not None:
        query = query.where(ShadowWindowRow.device_group == device_group)
    found = []
    for rollout_id, _ in session.execute(query).all():
        try:
            full = report(session, rollout_id)
        except (Invalid, NotFound):  # sketches of a rollout that is gone or not a shadow one: nothing to say
            continue
        found.append({"rollout_id": full.rollout_id, "state": full.state, "verdict": full.verdict,
                      "windows": full.windows, "canary_rollout_id": full.canary_rollout_id, "cohorts": [
                          {"cohort": c.cohort, "windows": c.windows, "rows": c.rows, "agreement": c.agreement,
                           "candidate_p95_ms": c.candidate_p95_ms, "active_p95_ms": c.active_p95_ms,
                           "error_rate": c.error_rate, "stopped": c.stopped, "verdict": c.verdict}
                          for c in full.cohorts if device_group is None or c.cohort == device_group]})
    return found

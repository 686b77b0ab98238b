"""The rollout engine: wave plans, issuing signed manifests, health gates, pause/resume/abort/rollback.

`step()` is pure database logic under a row lock on the rollout, so the periodic worker, the status-event
handler and a second replica may all call it at any time: whoever holds the lock advances, the rest wait
and then see the new state.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.fleet.manifests import CLEARED_ENVELOPE, ManifestFactory, ManifestTemplate
from control_plane.fleet.models import Deployment, Device, Manifest, Rollout, RolloutTarget
from control_plane.fleet.schemas import (
    FAILURE_STATES,
    FINISHED_STATES,
    IN_FLIGHT_STATES,
    SUCCESS_STATES,
    TERMINAL_ROLLOUT_STATES,
    RolloutState,
    Strategy,
    StrategyKind,
    TargetState,
    check_rollback_strategy,
)
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.registry.models import Artifact

SYSTEM_ACTOR = "system:rollout-engine"
OPEN_TARGET_STATES = frozenset({TargetState.PENDING}) | IN_FLIGHT_STATES
# Targets whose device may hold, or still be offered, this rollout's manifest without having confirmed it.
UNCONFIRMED_STATES = IN_FLIGHT_STATES | {TargetState.TIMED_OUT}


def wave_plan(strategy: Strategy, total: int) -> list[int]:
    """Return cumulative device counts per wave, e.g. waves [1, 10, 50, 100] of 200 devices → [2, 20, 100, 200]."""
    if total <= 0:
        return []
    if strategy.kind in (StrategyKind.ALL_AT_ONCE, StrategyKind.BLUE_GREEN, StrategyKind.SHADOW):
        # Blue-green and shadow stage everywhere at once; the cut-over (or the canary after the gate) comes later.
        return [total]
    counts: list[int] = []
    if strategy.kind == StrategyKind.WAVES:
        assert strategy.waves is not None
        candidates = [max(1, math.ceil(total * percent / 100.0)) for percent in strategy.waves]
    else:
        # Like AWS IoT Jobs' exponential rollout: base count, then each wave increment_factor times larger.
        candidates, size, done = [], float(strategy.base_count), 0
        while done < total:
            done = min(total, done + max(1, math.floor(size)))
            candidates.append(done)
            size *= strategy.increment_factor
    for count in candidates:
        count = min(total, count)
        if not counts or count > counts[-1]:
            counts.append(count)
    if counts[-1] != total:
        counts.append(total)
    return counts


def lock_rollout(session: Session, rollout_id: str) -> Rollout:
    """Return the rollout row locked for update (serialises the engine across replicas)."""
    rollout = session.scalar(select(Rollout).where(Rollout.id == rollout_id).with_for_update())
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} not found")
    return rollout


def next_sequence(session: Session, device_id: str) -> tuple[Device, int]:
    """Increment and return the device's manifest sequence under SELECT ... FOR UPDATE on its row."""
    device = session.scalar(select(Device).where(Device.id == device_id).with_for_update())
    if device is None:
        raise NotFound(f"device {device_id!r} not found")
    device.sequence += 1
    session.flush()
    return device, device.sequence


def target_counts(session: Session, rollout_id: str) -> Counter[str]:
    """Return how many targets of a rollout are in each state."""
    rows = session.execute(select(RolloutTarget.state, func.count()).where(RolloutTarget.rollout_id == rollout_id)
                           .group_by(RolloutTarget.state))
    return Counter({state: int(count) for state, count in rows})


def transition(session: Session, rollout: Rollout, state: RolloutState, actor: str, reason: str | None,
                now: datetime, **data: Any) -> None:
    previous = rollout.state
    rollout.state = state.value
    rollout.updated_at = now
    if reason:
        rollout.reason = reason
    if state in TERMINAL_ROLLOUT_STATES:
        rollout.finished_at = now
    session.flush()
    audit.record(session, actor=actor, action=f"rollout.{state.value}", resource=("rollout", rollout.id),
                 data={"from": previous, "to": state.value, "reason": reason, **data})


def _cancel_open_targets(session: Session, rollout_id: str, reason: str, now: datetime,
                         states: frozenset[TargetState] = frozenset({TargetState.PENDING})) -> int:
    result = session.execute(
        update(RolloutTarget).where(RolloutTarget.rollout_id == rollout_id,
                                    RolloutTarget.state.in_([s.value for s in states]))
        .values(state=TargetState.CANCELLED.value, reason=reason, finished_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def cancel_superseded(session: Session, device_ids: list[str], keep_rollout_id: str, now: datetime) -> None:
    """Cancel open targets of these devices in other rollouts: the newest rollout owns a device."""
    for chunk in range(0, len(device_ids), 500):
        session.execute(
            update(RolloutTarget).where(RolloutTarget.device_id.in_(device_ids[chunk:chunk + 500]),
                                        RolloutTarget.rollout_id != keep_rollout_id,
                                        RolloutTarget.state.in_([s.value for s in OPEN_TARGET_STATES]))
            .values(state=TargetState.CANCELLED.value, reason="superseded", finished_at=now)
        )


def _templates(session: Session, factory: ManifestFactory, deployment: Deployment,
               artifact_ids: set[str], rollout_kind: str = "deploy") -> dict[str, ManifestTemplate]:
    templates = {}
    kind = deployment.strategy.get("kind")
    # A shadow deployment's first rollout stages and shadows the candidate; its canary installs it for real.
    shadow = deployment.strategy.get("shadow") if kind == "shadow" and rollout_kind == "shadow" else None
    for artifact_id in artifact_ids:
        artifact = session.get(Artifact, artifact_id)
        if artifact is None:
            raise Invalid(f"artifact {artifact_id!r} no longer exists")
        templates[artifact_id] = factory.template(session, version=artifact.model_version, artifact=artifact,
                                                  max_latency_ms=deployment.strategy.get("max_latency_ms"),
                                                  stage_only=kind == "blue_green" or shadow is not None,
                                                  shadow=shadow)
    return templates


def _lock_devices(session: Session, device_ids: list[str]) -> dict[str, Device]:
    """Lock many device rows at once, in id order so concurrent issuers cannot deadlock."""
    locked: dict[str, Device] = {}
    for chunk in range(0, len(device_ids), 500):
        query = select(Device).where(Device.id.in_(sorted(device_ids)[chunk:chunk + 500])).order_by(Device.id)
        locked.update({d.id: d for d in session.scalars(query.with_for_update())})
    return locked


def _open_wave(session: Session, factory: ManifestFactory, rollout: Rollout, wave: int, now: datetime) -> int:
    targets = list(session.scalars(
        select(RolloutTarget).where(RolloutTarget.rollout_id == rollout.id, RolloutTarget.wave == wave,
                                    RolloutTarget.state == TargetState.PENDING.value)
        .order_by(RolloutTarget.position)
    ))
    if not targets:
        return 0
    deployment = session.get(Deployment, rollout.deployment_id)
    assert deployment is not None
    templates = _templates(session, factory, deployment, {t.artifact_id for t in targets}, rollout.kind)
    # Same steps as issue(), batched: one locking query and one bulk insert for a whole wave.
    devices = _lock_devices(session, [t.device_id for t in targets])
    manifests = []
    for target in targets:
        device = devices[target.device_id]
        device.sequence += 1
        template = templates[target.artifact_id]
        envelope, expires_at = factory.sign(template, device_id=device.id, sequence=device.sequence,
                                            rollout_id=rollout.id, now=now.timestamp())
        manifests.append({"device_id": device.id, "rollout_id": rollout.id, "sequence": device.sequence,
                          "artifact_sha256": template.sha256, "envelope": envelope,
                          "expires_at": datetime.fromtimestamp(expires_at, now.tzinfo), "published_at": None,
                          "created_at": now})
        target.state, target.sequence, target.issued_at = TargetState.ISSUED.value, device.sequence, now
        device.desired_rollout_id, device.desired_artifact_id = rollout.id, target.artifact_id
        device.desired_sequence = device.sequence
    if manifests:
        session.execute(insert(Manifest), manifests)
    rollout.current_wave, rollout.wave_started_at, rollout.updated_at = wave, now, now
    session.flush()
    audit.record(session, actor=SYSTEM_ACTOR, action="rollout.wave_started", resource=("rollout", rollout.id),
                 data={"wave": wave, "devices": len(targets), "cumulative": rollout.wave_plan[wave]})
    return len(targets)


def _timeout_wave(session: Session, rollout: Rollout, now: datetime) -> int:
    started = rollout.wave_started_at
    if started is None or rollout.current_wave < 0 or now < started + timedelta(seconds=rollout.wave_timeout_s):
        return 0
    result = session.execute(
        update(RolloutTarget).where(RolloutTarget.rollout_id == rollout.id,
                                    RolloutTarget.wave <= rollout.current_wave,
                                    RolloutTarget.state.in_([s.value for s in IN_FLIGHT_STATES]))
        .values(state=TargetState.TIMED_OUT.value, reason="wave_timeout", finished_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def health(counts: Counter[str], threshold: float, min_finished: int) -> tuple[bool, int, int]:
    """Return (gate_ok, failed, finished): failing once enough devices finished and too many of them failed."""
    failed = sum(counts[s.value] for s in FAILURE_STATES)
    # A staged blue-green target has finished its manifest successfully (the cut-over is a separate command).
    finished = failed + sum(counts[s.value] for s in SUCCESS_STATES) + counts[TargetState.STAGED.value]
    breached = finished >= min_finished and finished > 0 and failed / finished > threshold
    return not breached, failed, finished


def step(session: Session, factory: ManifestFactory, rollout_id: str, now: datetime | None = None) -> Rollout:
    """Advance one rollout as far as its state allows: start, time out, gate, open the next wave, finish."""
    now = now or utcnow()
    rollout = lock_rollout(session, rollout_id)
    if rollout.state in TERMINAL_ROLLOUT_STATES or rollout.state == RolloutState.PAUSED:
        return rollout
    if rollout.state == RolloutState.PENDING:
        transition(session, rollout, RolloutState.IN_PROGRESS, SYSTEM_ACTOR, None, now)
    timed_out = _timeout_wave(session, rollout, now)
    counts = target_counts(session, rollout.id)
    ok, failed, finished = health(counts, rollout.failure_threshold, rollout.min_finished)
    if not ok:
        restored = restore_after_abort(session, factory, rollout, now)
        cancelled = _cancel_open_targets(session, rollout.id, "rollout_aborted", now, OPEN_TARGET_STATES)
        transition(session, rollout, RolloutState.ABORTED, SYSTEM_ACTOR,
                    f"health gate: {failed} of {finished} finished devices failed "
                    f"(threshold {rollout.failure_threshold:.0%})", now,
                    failed=failed, finished=finished, timed_out=timed_out, cancelled=cancelled, **restored)
        return rollout
    if any(counts[s.value] for s in IN_FLIGHT_STATES):
        return rollout
    next_wave = rollout.current_wave + 1
    while next_wave < len(rollout.wave_plan):
        if _open_wave(session, factory, rollout, next_wave, now):
            return rollout
        next_wave += 1  # Every device of that wave was superseded or cancelled: move on.
    activated = counts[TargetState.ACTIVATED.value] + counts[TargetState.STAGED.value]
    cancelled = counts[TargetState.CANCELLED.value]
    if rollout.kind == "shadow" and activated:
        from control_plane.fleet import shadow  # lazy: the gate module builds on this one

        return shadow.evaluate(session, factory, rollout, now)
    if not activated and not failed:
        # Every device was taken over by a newer rollout before it finished this one.
        transition(session, rollout, RolloutState.ABORTED, SYSTEM_ACTOR, "superseded by newer rollouts", now,
                    cancelled=cancelled)
        return rollout
    final = RolloutState.SUCCEEDED if activated else RolloutState.FAILED
    transition(session, rollout, final, SYSTEM_ACTOR, None, now, activated=activated, failed=failed,
                cancelled=cancelled)
    return rollout


def active_rollout_ids(session: Session) -> list[str]:
    """Return the rollouts the engine still has to drive."""
    return list(session.scalars(select(Rollout.id).where(
        Rollout.state.in_([RolloutState.PENDING.value, RolloutState.IN_PROGRESS.value])).order_by(Rollout.created_at)))


def pause(session: Session, rollout_id: str, actor: str, reason: str = "") -> Rollout:
    """Stop opening new waves; devices already updating finish."""
    rollout = lock_rollout(session, rollout_id)
    if rollout.state not in (RolloutState.PENDING, RolloutState.IN_PROGRESS):
        raise Conflict(f"rollout {rollout_id} is {rollout.state}; only a running rollout can be paused")
    transition(session, rollout, RolloutState.PAUSED, actor, reason or None, utcnow())
    return rollout


def resume(session: Session, factory: ManifestFactory, rollout_id: str, actor: str, reason: str = "") -> Rollout:
    """Continue a paused rollout and advance it right away."""
    rollout = lock_rollout(session, rollout_id)
    if rollout.state != RolloutState.PAUSED:
        raise Conflict(f"rollout {rollout_id} is {rollout.state}; only a paused rollout can be resumed")
    transition(session, rollout, RolloutState.IN_PROGRESS, actor, reason or None, utcnow())
    return step(session, factory, rollout_id)


def abort(session: Session, factory: ManifestFactory, rollout_id: str, actor: str, reason: str = "") -> Rollout:
    """Stop the rollout for good; devices that had not confirmed it are sent back to what they were told before.

    Devices that activated keep the new model (a rollback returns them); see `restore_after_abort` for the rest.
    """
    rollout = lock_rollout(session, rollout_id)
    if rollout.state in TERMINAL_ROLLOUT_STATES:
        raise Conflict(f"rollout {rollout_id} is already {rollout.state}")
    now = utcnow()
    restored = restore_after_abort(session, factory, rollout, now)
    cancelled = _cancel_open_targets(session, rollout.id, "rollout_aborted", now, OPEN_TARGET_STATES)
    transition(session, rollout, RolloutState.ABORTED, actor, reason or "aborted by operator", now,
                cancelled=cancelled, **restored)
    return rollout


def restore_after_abort(session: Session, factory: ManifestFactory, rollout: Rollout, now: datetime) -> dict[str, int]:
    """Replace the retained manifest of every device that was sent this rollout but never confirmed it.

    Left alone, the broker keeps offering the aborted manifest, and a device that was offline installs it when it
    comes back. A device with a known previous artifact gets a new, higher-sequence manifest for it (so it ends
    on what it ran before, even if it had started installing); one without gets its retained manifest cleared
    (an empty retained message) and keeps whatever it runs. A device already taken over by a newer manifest is
    not touched.
    """
    targets = list(session.scalars(select(RolloutTarget).where(
        RolloutTarget.rollout_id == rollout.id, RolloutTarget.sequence.is_not(None),
        RolloutTarget.state.in_([s.value for s in UNCONFIRMED_STATES])).order_by(RolloutTarget.position)))
    if not targets:
        return {"restored": 0, "cleared": 0}
    devices = _lock_devices(session, [t.device_id for t in targets])
    ours = [t for t in targets if (device := devices.get(t.device_id)) is not None
            and device.desired_rollout_id == rollout.id and device.desired_sequence == t.sequence]
    deployment = session.get(Deployment, rollout.deployment_id)
    assert deployment is not None
    templates = _templates(session, factory, deployment, {t.previous_artifact_id for t in ours
                                                           if t.previous_artifact_id})
    manifests, restored = [], 0
    for target in ours:
        device = devices[target.device_id]
        device.sequence += 1
        previous = target.previous_artifact_id
        row: dict[str, Any] = {"device_id": device.id, "rollout_id": rollout.id, "sequence": device.sequence,
                               "published_at": None, "created_at": now}
        if previous is not None:
            envelope, expires_at = factory.sign(templates[previous], device_id=device.id, sequence=device.sequence,
                                                rollout_id=rollout.id, now=now.timestamp())
            row |= {"artifact_sha256": templates[previous].sha256, "envelope": envelope,
                    "expires_at": datetime.fromtimestamp(expires_at, now.tzinfo)}
            restored += 1
        else:
            row |= {"artifact_sha256": "", "envelope": CLEARED_ENVELOPE, "expires_at": now}
        manifests.append(row)
        device.desired_artifact_id, device.desired_sequence = previous, device.sequence
    if manifests:
        session.execute(insert(Manifest), manifests)
    session.flush()
    return {"restored": restored, "cleared": len(manifests) - restored}


def rollback(session: Session, factory: ManifestFactory, rollout_id: str, strategy: Strategy, actor: str,
             reason: str = "") -> Rollout:
    """Return every device this rollout reached to its previous artifact, with new, higher-sequence manifests."""
    try:  # the CLI builds its Strategy without the request schema's check
        check_rollback_strategy(strategy)
    except ValueError as refused:
        raise Invalid(str(refused)) from None
    original = lock_rollout(session, rollout_id)
    if original.state == RolloutState.ROLLED_BACK:
        raise Conflict(f"rollout {rollout_id} is already rolled back")
    now = utcnow()
    reached = list(session.scalars(select(RolloutTarget).where(
        RolloutTarget.rollout_id == rollout_id,
        RolloutTarget.state.in_([s.value for s in SUCCESS_STATES | IN_FLIGHT_STATES | {TargetState.TIMED_OUT}]),
        RolloutTarget.previous_artifact_id.is_not(None)).order_by(RolloutTarget.position)))
    if not reached:
        raise Invalid(f"rollout {rollout_id} reached no device that has a previous model to return to")
    _cancel_open_targets(session, rollout_id, "rolled_back", now)
    back = Rollout(deployment_id=original.deployment_id, kind="rollback", rollback_of=original.id,
                   state=RolloutState.PENDING.value, wave_plan=wave_plan(strategy, len(reached)),
                   failure_threshold=strategy.failure_threshold, min_finished=strategy.min_finished,
                   wave_timeout_s=strategy.wave_timeout_s, reason=reason or None, created_by=actor, updated_at=now)
    session.add(back)
    session.flush()
    add_targets(session, back, [(t.device_id, t.previous_artifact_id or "", t.artifact_id) for t in reached])
    cancel_superseded(session, [t.device_id for t in reached], back.id, now)
    lineage.link(session, (NodeKind.ROLLOUT, original.id), (NodeKind.ROLLOUT, back.id), "rolled_back_by")
    lineage.link(session, (NodeKind.DEPLOYMENT, original.deployment_id), (NodeKind.ROLLOUT, back.id), "executed_by")
    audit.record(session, actor=actor, action="rollout.create", resource=("rollout", back.id),
                 data={"kind": "rollback", "rollback_of": original.id, "devices": len(reached),
                       "wave_plan": back.wave_plan, "reason": reason})
    transition(session, original, RolloutState.ROLLED_BACK, actor, reason or None, now, rollback_id=back.id)
    return step(session, factory, back.id, now)


def add_targets(session: Session, rollout: Rollout, targets: list[tuple[str, str, str | None]]) -> None:
    """Insert (device_id, artifact_id, previous_artifact_id) targets, assigned to waves in order."""
    plan = rollout.wave_plan
    wave = 0
    rows = []
    for position, (device_id, artifact_id, previous) in enumerate(targets):
        while position >= plan[wave]:
            wave += 1
        rows.append(RolloutTarget(rollout_id=rollout.id, device_id=device_id, wave=wave, position=position,
                                  artifact_id=artifact_id, previous_artifact_id=previous,
                                  state=TargetState.PENDING.value))
    session.add_all(rows)
    session.flush()


def is_finished(state: str) -> bool:
    """Return whether a target state is final."""
    return state in {s.value for s in FINISHED_STATES}

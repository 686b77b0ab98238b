"""One executor per action kind, registered in one table; each runs through the domain service that exists.

An executor names its target, snapshots the preconditions it assumes (raising NotFound for a target that does
not exist), refuses at creation an action that cannot apply to that snapshot (Conflict), and executes. Approval
and execution compare a fresh snapshot with the stored one, so a refusal names exactly what changed.
Execution runs in the same transaction that marks the proposal executed, so an action and its record commit
together or not at all; each executor also checks for an effect already recorded under the proposal's id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from control_plane.approvals.models import DeviceQuarantine, Proposal, RetrainRequest
from control_plane.approvals.schemas import (
    Action,
    DeviceQuarantineAction,
    ExperimentPromote,
    PromptLabelMove,
    RetrainRequestAction,
    RolloutAbort,
    RolloutPause,
    RolloutRollback,
)
from control_plane.approvals.targets import ModelVersionTarget
from control_plane.audit import service as audit
from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, NotFound
from control_plane.fleet import abtest, rollouts
from control_plane.fleet.manifests import ManifestFactory
from control_plane.fleet.models import Device, Rollout, RolloutTarget
from control_plane.fleet.schemas import TERMINAL_ROLLOUT_STATES, RolloutState, TargetState
from control_plane.prompts import labels
from control_plane.prompts import service as prompts
from control_plane.prompts.models import PromptLabel
from control_plane.prompts.schemas import LabelSet
from control_plane.training.canary import CanaryExecutor
from control_plane.training.jobs import enqueue_request


@dataclass(frozen=True)
class ExecutionContext:
    """What an executor may use: the manifest factory (lazily), and who decided and why."""

    factory: Callable[[], ManifestFactory]
    proposal: Proposal

    @property
    def actor(self) -> str:
        """The approver: the domain's own audit entry names who decided, not the worker."""
        return self.proposal.decided_by or "system:approvals"

    @property
    def reason(self) -> str:
        """The reason recorded on the domain change: the proposal and its decision."""
        return f"proposal {self.proposal.id}: {self.proposal.decision_reason or ''}"[:500]


class Executor(Protocol):
    """Target, preconditions and execution of one action kind."""

    def target(self, action: Any) -> tuple[str, str]: ...

    def snapshot(self, session: Session, action: Any) -> dict[str, Any]: ...

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None: ...

    def execute(self, session: Session, action: Any, context: ExecutionContext) -> dict[str, Any]: ...


def _rollout(session: Session, rollout_id: str) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} not found")
    return rollout


def _phase(state: str) -> str:
    # A pending rollout becoming in_progress is the engine's normal progress, not a change the approver missed.
    return "running" if state in (RolloutState.PENDING, RolloutState.IN_PROGRESS) else state


def _newest_rollout_on_devices(session: Session, rollout_id: str) -> str | None:
    devices = select(RolloutTarget.device_id).where(RolloutTarget.rollout_id == rollout_id)
    return session.scalar(select(Rollout.id).join(RolloutTarget, RolloutTarget.rollout_id == Rollout.id)
                          .where(RolloutTarget.device_id.in_(devices))
                          .order_by(Rollout.created_at.desc(), Rollout.id.desc()).limit(1))


class _RolloutExecutor:
    def target(self, action: Any) -> tuple[str, str]:
        return "rollout", action.rollout_id

    def snapshot(self, session: Session, action: Any) -> dict[str, Any]:
        rollout = _rollout(session, action.rollout_id)
        return {"rollout.state": _phase(rollout.state),
                "rollout.newest_on_its_devices": _newest_rollout_on_devices(session, rollout.id)}


class RollbackExecutor(_RolloutExecutor):
    """fleet.rollouts.rollback."""

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        if snapshot["rollout.state"] == RolloutState.ROLLED_BACK:
            raise Conflict(f"rollout {action.rollout_id} is already rolled back", preconditions=snapshot)

    def execute(self, session: Session, action: RolloutRollback, context: ExecutionContext) -> dict[str, Any]:
        done = session.scalar(select(Rollout.id).where(Rollout.rollback_of == action.rollout_id,
                                                       Rollout.reason.startswith(f"proposal {context.proposal.id}:")))
        if done is not None:
            return {"rollback_rollout_id": done, "already_done": True}
        back = rollouts.rollback(session, context.factory(), action.rollout_id, action.strategy, context.actor,
                                 context.reason)
        return {"rollback_rollout_id": back.id, "rollback_state": back.state}


class PauseExecutor(_RolloutExecutor):
    """fleet.rollouts.pause."""

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        if snapshot["rollout.state"] != "running":
            raise Conflict(f"rollout {action.rollout_id} is {snapshot['rollout.state']}; only a running rollout "
                           "can be paused", preconditions=snapshot)

    def execute(self, session: Session, action: RolloutPause, context: ExecutionContext) -> dict[str, Any]:
        rollout = rollouts.pause(session, action.rollout_id, context.actor, context.reason)
        return {"rollout_state": rollout.state}


class AbortExecutor(_RolloutExecutor):
    """fleet.rollouts.abort."""

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        if snapshot["rollout.state"] in TERMINAL_ROLLOUT_STATES:
            raise Conflict(f"rollout {action.rollout_id} is already {snapshot['rollout.state']}",
                           preconditions=snapshot)

    def execute(self, session: Session, action: RolloutAbort, context: ExecutionContext) -> dict[str, Any]:
        rollout = rollouts.abort(session, context.factory(), action.rollout_id, context.actor, context.reason)
        return {"rollout_state": rollout.state}


class LabelMoveExecutor:
    """prompts.labels.set_label, with the approver's rights (protected labels still pass the eval gate)."""

    def target(self, action: Any) -> tuple[str, str]:
        return "prompt_label", f"{action.prompt}:{action.label}"

    def snapshot(self, session: Session, action: Any) -> dict[str, Any]:
        target = prompts.get_version(session=session, name=action.prompt, version=action.version)  # 404s
        pointer = session.get(PromptLabel, (target.prompt_id, action.label))
        return {"label.version": pointer.version.version if pointer else None, "target.version_id": target.id}

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        if snapshot["label.version"] == action.version:
            raise Conflict(f"label {action.label!r} of {action.prompt!r} already points at version {action.version}")

    def execute(self, session: Session, action: PromptLabelMove, context: ExecutionContext) -> dict[str, Any]:
        role_name, _, name = context.actor.partition(":")
        role = Role(role_name) if role_name in Role.__members__.values() else Role.APPROVER
        principal = Principal(token_id=f"proposal:{context.proposal.id}", name=name or context.actor, role=role,
                              scopes=ROLE_SCOPES[role])
        pointer, decision, overridden = labels.set_label(
            session=session, name=action.prompt, label=action.label, principal=principal,
            request=LabelSet(version=action.version, override_reason=action.override_reason))
        return {"label": action.label, "version": action.version, "version_id": pointer.version_id,
                "gate_passed": decision.passed if decision else None, "overridden": overridden}


class QuarantineExecutor:
    """Mark the device quarantined and cancel its not-yet-issued rollout targets."""

    def target(self, action: Any) -> tuple[str, str]:
        return "device", action.device_id

    def snapshot(self, session: Session, action: Any) -> dict[str, Any]:
        if session.get(Device, action.device_id) is None:
            raise NotFound(f"device {action.device_id!r} not found")
        return {"device.quarantined": session.get(DeviceQuarantine, action.device_id) is not None}

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        if snapshot["device.quarantined"]:
            raise Conflict(f"device {action.device_id!r} is already quarantined")

    def execute(self, session: Session, action: DeviceQuarantineAction, context: ExecutionContext
                ) -> dict[str, Any]:
        proposal = context.proposal
        session.add(DeviceQuarantine(device_id=action.device_id, reason=context.reason, proposal_id=proposal.id,
                                     incident_id=proposal.incident_id, created_by=context.actor))
        cancelled = session.execute(
            update(RolloutTarget).where(RolloutTarget.device_id == action.device_id,
                                        RolloutTarget.state == TargetState.PENDING.value)
            .values(state=TargetState.CANCELLED.value, reason="quarantined", finished_at=utcnow()))
        session.flush()
        audit.record(session, actor=context.actor, action="device.quarantine", resource=("device", action.device_id),
                     data={"proposal_id": proposal.id, "reason": context.reason,
                           "cancelled_targets": int(cancelled.rowcount or 0)})  # type: ignore[attr-defined]
        return {"device_id": action.device_id, "quarantined": True}


class RetrainExecutor(ModelVersionTarget):
    """Record the request and queue its training job (control_plane.training picks it up)."""

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        """Any number of requests may be open; the closed loop merges them."""

    def execute(self, session: Session, action: RetrainRequestAction, context: ExecutionContext) -> dict[str, Any]:
        proposal = context.proposal
        existing = session.scalar(select(RetrainRequest).where(RetrainRequest.proposal_id == proposal.id))
        if existing is None:
            existing = RetrainRequest(proposal_id=proposal.id, incident_id=proposal.incident_id,
                                      model_name=action.model, model_version=action.version,
                                      window_start=action.window_start, window_end=action.window_end,
                                      cohort=action.cohort, reason=context.reason, created_by=context.actor)
            session.add(existing)
            session.flush()
            audit.record(session, actor=context.actor, action="retrain.request", resource=("retrain", existing.id),
                         data={"proposal_id": proposal.id, "model": action.model, "version": action.version,
                               "cohort": action.cohort})
        job = enqueue_request(session, existing, actor=context.actor)  # same commit: approved means queued
        return {"retrain_request_id": existing.id, "training_job_id": job.id}


class PromoteExecutor:
    """fleet.abtest.promote: the decided winner of an A/B test to its whole group, in waves."""

    def target(self, action: Any) -> tuple[str, str]:
        return "experiment", action.experiment_id

    def snapshot(self, session: Session, action: Any) -> dict[str, Any]:
        experiment = abtest.get_experiment(session=session, experiment_id=action.experiment_id)  # 404s
        return {"experiment.state": experiment.state, "experiment.winner_version": experiment.winner_version}

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        if snapshot["experiment.state"] != abtest.DECIDED or snapshot["experiment.winner_version"] != action.version:
            raise Conflict(f"experiment {action.experiment_id} is {snapshot['experiment.state']} with winner "
                           f"{snapshot['experiment.winner_version']}; only a decided winner can be promoted",
                           preconditions=snapshot)

    def execute(self, session: Session, action: ExperimentPromote, context: ExecutionContext) -> dict[str, Any]:
        experiment = abtest.get_experiment(session=session, experiment_id=action.experiment_id, lock=True)
        if experiment.promotion_rollout_id:
            return {"promotion_rollout_id": experiment.promotion_rollout_id, "already_done": True}
        rollout = abtest.promote(session, context.factory(), experiment.id, action.version, action.strategy,
                                 context.actor, context.reason)
        return {"promotion_rollout_id": rollout.id, "rollout_state": rollout.state}


EXECUTORS: dict[str, Executor] = {
    "rollout.rollback": RollbackExecutor(),
    "rollout.pause": PauseExecutor(),
    "rollout.abort": AbortExecutor(),
    "prompt.label_move": LabelMoveExecutor(),
    "device.quarantine": QuarantineExecutor(),
    "retrain.request": RetrainExecutor(),
    "experiment.promote": PromoteExecutor(),
    "rollout.canary": CanaryExecutor(),
}


def executor_for(action: Action) -> Executor:
    """Return the one executor registered for this action's kind."""
    return EXECUTORS[action.kind]

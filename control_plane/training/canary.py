"""The rollout.canary executor: an approved challenger goes to its cohort in waves, exactly once per proposal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.approvals.schemas import RolloutCanary
from control_plane.approvals.targets import ModelVersionTarget
from control_plane.fleet import service as fleet
from control_plane.fleet.models import Rollout
from control_plane.fleet.schemas import DeploymentCreate
from control_plane.lineage import service as lineage
from control_plane.lineage.models import LineageEdge
from control_plane.lineage.schemas import NodeKind

if TYPE_CHECKING:
    from control_plane.approvals.executors import ExecutionContext

EXECUTED_AS = "executed_as"


class CanaryExecutor(ModelVersionTarget):
    """fleet.service.create_deployment of the challenger to the cohort, with a waves strategy."""

    def precheck(self, action: Any, snapshot: dict[str, Any]) -> None:
        """A canary of a registered version always applies; the fleet service refuses an empty selector."""

    def execute(self, session: Session, action: RolloutCanary, context: ExecutionContext) -> dict[str, Any]:
        proposal = context.proposal
        # The proposal -> deployment edge is written in the same transaction as the deployment: its presence
        # means this proposal's canary exists already (a re-claimed execution must not deploy twice).
        done = session.scalar(select(LineageEdge.dst_id).where(
            LineageEdge.src_kind == NodeKind.PROPOSAL.value, LineageEdge.src_id == proposal.id,
            LineageEdge.dst_kind == NodeKind.DEPLOYMENT.value, LineageEdge.relation == EXECUTED_AS))
        if done is not None:
            rollout_id = session.scalar(select(Rollout.id).where(Rollout.deployment_id == done,
                                                                 Rollout.kind == "deploy"))
            return {"deployment_id": done, "rollout_id": rollout_id, "already_done": True}
        rollout = fleet.create_deployment(
            session=session, factory=context.factory(), actor=context.actor,
            request=DeploymentCreate(model=action.model, version=action.version, selector=action.selector,
                                     strategy=action.strategy))
        lineage.link(session, (NodeKind.PROPOSAL, proposal.id), (NodeKind.DEPLOYMENT, rollout.deployment_id),
                     EXECUTED_AS)
        return {"deployment_id": rollout.deployment_id, "rollout_id": rollout.id, "rollout_state": rollout.state,
                "training_job_id": action.training_job_id}

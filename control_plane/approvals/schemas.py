"""Proposal bodies: the action kinds (a discriminated union with validated parameters), decisions, outcomes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.constraints import Label, Name, SafeJson, ShortText
from control_plane.fleet.schemas import Selector, Strategy, StrategyKind, check_rollback_strategy
from control_plane.incidents.schemas import EvidenceRef, Version

DEFAULT_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 7 * 86_400


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class ProposalState(StrEnum):
    """pending -> approved | rejected | expired; approved -> executing -> executed | failed."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"


class Verification(StrEnum):
    """What whoever checked after execution found."""

    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"
    UNKNOWN = "unknown"


class Risk(StrEnum):
    """The proposer's estimate of what could go wrong."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RolloutRollback(StrictModel):
    """Return the devices a rollout reached to their previous model (fleet.rollouts.rollback)."""

    kind: Literal["rollout.rollback"]
    rollout_id: Name
    strategy: Strategy = Field(default_factory=Strategy)

    @model_validator(mode="after")
    def _plain_or_waved(self) -> RolloutRollback:
        check_rollback_strategy(self.strategy)
        return self


class RolloutPause(StrictModel):
    """Stop a running rollout from opening new waves (fleet.rollouts.pause)."""

    kind: Literal["rollout.pause"]
    rollout_id: Name


class RolloutAbort(StrictModel):
    """Stop a rollout for good (fleet.rollouts.abort)."""

    kind: Literal["rollout.abort"]
    rollout_id: Name


class PromptLabelMove(StrictModel):
    """Point a prompt's label at another version (prompts.labels.set_label, gate included)."""

    kind: Literal["prompt.label_move"]
    prompt: Name
    label: Label
    version: Version
    override_reason: Annotated[str | None, Field(min_length=10, max_length=2000)] = None


class DeviceQuarantineAction(StrictModel):
    """Quarantine a device: rollouts skip it, fleet drift leaves out its telemetry."""

    kind: Literal["device.quarantine"]
    device_id: Name


class RetrainRequestAction(StrictModel):
    """Record a retraining request for a drifted window and cohort."""

    kind: Literal["retrain.request"]
    model: Name
    version: Version
    window_start: datetime
    window_end: datetime
    cohort: SafeJson = Field(default_factory=dict, description="e.g. {'device_group': 'north'}")

    @model_validator(mode="after")
    def _window(self) -> RetrainRequestAction:
        if self.window_start.tzinfo is None or self.window_end.tzinfo is None:
            raise ValueError("window_start and window_end need a timezone")
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class ExperimentPromote(StrictModel):
    """Roll an A/B test's decided winner out to its whole group (fleet.abtest.promote), in waves by default."""

    kind: Literal["experiment.promote"]
    experiment_id: Name
    version: Version
    strategy: Strategy = Field(default_factory=lambda: Strategy(kind=StrategyKind.WAVES, waves=[50, 100]))

    @model_validator(mode="after")
    def _not_another_test(self) -> ExperimentPromote:
        if self.strategy.kind == StrategyKind.AB:
            raise ValueError("a promotion rolls one version out; it cannot be another A/B test")
        return self


def _canary_waves() -> Strategy:
    return Strategy(kind=StrategyKind.WAVES, waves=[10, 50, 100], failure_threshold=0.1)


class RolloutCanary(StrictModel):
    """Deploy a retrained challenger to its cohort in waves (fleet.service.create_deployment)."""

    kind: Literal["rollout.canary"]
    model: Name
    version: Version
    selector: Selector
    strategy: Strategy = Field(default_factory=_canary_waves)
    training_job_id: Name | None = None

    @model_validator(mode="after")
    def _waved(self) -> RolloutCanary:
        if self.strategy.kind not in (StrategyKind.WAVES, StrategyKind.EXPONENTIAL):
            raise ValueError("a canary rolls out in waves (waves or exponential)")
        return self


Action = Annotated[RolloutRollback | RolloutPause | RolloutAbort | PromptLabelMove | DeviceQuarantineAction
                   | RetrainRequestAction | ExperimentPromote | RolloutCanary, Field(discriminator="kind")]
ActionKind = Literal["rollout.rollback", "rollout.pause", "rollout.abort", "prompt.label_move",
                     "device.quarantine", "retrain.request", "experiment.promote", "rollout.canary"]


class ProposalCreate(StrictModel):
    """Propose an action; the control plane snapshots the preconditions it assumes."""

    action: Action
    incident_id: Name | None = None
    evidence: Annotated[list[EvidenceRef], Field(max_length=50)] = Field(default_factory=list)
    expected_effect: Annotated[str, Field(min_length=1, max_length=2000)]
    risk: Risk = Risk.MEDIUM
    expires_in_seconds: Annotated[int, Field(ge=60, le=MAX_EXPIRY_SECONDS)] = DEFAULT_EXPIRY_SECONDS
    idempotency_key: Annotated[str | None, Field(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")] = None
    agent_run_id: Name | None = None


class Decision(StrictModel):
    """Approve or reject; a reason is always required."""

    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]


class VerificationCreate(StrictModel):
    """Record whether the executed action helped."""

    outcome: Verification
    note: ShortText = ""
    evidence: Annotated[list[EvidenceRef], Field(max_length=50)] = Field(default_factory=list)
    agent_run_id: Name | None = None


class ProposalRead(BaseModel):
    """A proposal with everything the approver saw and what happened since."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    params: dict[str, Any]
    target_type: str
    target_id: str
    incident_id: str | None
    evidence: list[dict[str, Any]]
    expected_effect: str
    risk: Risk
    expires_at: datetime
    proposer: str
    agent_run_id: str | None
    idempotency_key: str
    preconditions: dict[str, Any]
    state: ProposalState
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    attempts: int
    claimed_at: datetime | None
    executed_at: datetime | None
    result: dict[str, Any] | None
    error: str | None
    verification: Verification | None
    verified_by: str | None
    verified_at: datetime | None
    verification_note: str | None
    created_at: datetime
    updated_at: datetime | None


class ProposalPage(BaseModel):
    """A page of proposals, newest first."""

    items: list[ProposalRead]
    total: int


class QuarantineRead(BaseModel):
    """A quarantined device."""

    model_config = ConfigDict(from_attributes=True)

    device_id: str
    reason: str
    proposal_id: str | None
    incident_id: str | None
    created_by: str
    created_at: datetime


class RetrainRequestRead(BaseModel):
    """A recorded retraining request."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    proposal_id: str | None
    incident_id: str | None
    model_name: str
    model_version: int
    window_start: datetime
    window_end: datetime
    cohort: dict[str, Any]
    reason: str
    state: str
    created_by: str
    created_at: datetime

"""Fleet request and response bodies."""

from __future__ import annotations

import itertools
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from control_plane.constraints import LIST_MAX, Label, PositiveInt32, ShortText
from control_plane.fleet.abtest_schemas import ExperimentDesign

DeviceId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
GroupName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
Labels = Annotated[dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=200)]],
                  Field(max_length=100)]

# Past these a timeout or latency bound is a typo, and timedelta() would overflow long before the database.
MAX_WAVE_TIMEOUT_S = 30 * 86_400.0
MAX_LATENCY_MS = 3_600_000.0

class RolloutState(StrEnum):
    """Rollout lifecycle: pending → in_progress ⇄ paused → succeeded | aborted | failed | rolled_back."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


TERMINAL_ROLLOUT_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.FAILED,
                                     RolloutState.ROLLED_BACK})


class TargetState(StrEnum):
    """Per-device progress inside a rollout; device states come from docs/protocol.md."""

    PENDING = "pending"
    ISSUED = "issued"
    RECEIVED = "received"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    ACTIVATED = "activated"
    STAGED = "staged"  # blue-green: verified and self-tested in the inactive slot, waiting for the cut-over
    FAILED = "failed"
    REVERTED = "reverted"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


SUCCESS_STATES = frozenset({TargetState.ACTIVATED})
FAILURE_STATES = frozenset({TargetState.FAILED, TargetState.REVERTED, TargetState.REJECTED, TargetState.TIMED_OUT})
FINISHED_STATES = SUCCESS_STATES | FAILURE_STATES | {TargetState.CANCELLED}
IN_FLIGHT_STATES = frozenset({TargetState.ISSUED, TargetState.RECEIVED, TargetState.DOWNLOADING,
                              TargetState.VERIFIED})
# staged, switched, not_switched and scheduled are blue-green reports (edge_agent/bluegreen.py), shadow_stopped a
# shadow report (edge_agent/shadow.py): kept as device state and events; only staged moves a (blue-green) target.
DEVICE_STATES = frozenset({"received", "downloading", "verified", "activated", "failed", "reverted", "rejected",
                           "staged", "switched", "not_switched", "scheduled", "shadow_stopped"})


class StrictModel(BaseModel):
    """Rejects unknown fields."""

    model_config = ConfigDict(extra="forbid")


class DeviceCreate(StrictModel):
    id: DeviceId
    name: ShortText = ""
    group: GroupName | None = None
    labels: Labels = Field(default_factory=dict)


class DeviceUpdate(StrictModel):
    name: ShortText | None = None
    group: GroupName | None = None
    labels: Labels | None = None


class DeviceRead(BaseModel):
    id: str
    name: str
    group: str | None
    labels: dict[str, str]
    sequence: int
    desired: dict[str, Any]
    reported: dict[str, Any]
    online: bool
    last_seen: datetime | None
    created_at: datetime


class DeviceProvisioned(DeviceRead):
    """A new device with the secrets and endpoints it needs; the token is shown once."""

    token: str
    trusted_public_key: str
    key_id: str
    broker_url: str | None
    control_plane_url: str
    topic_prefix: str
    edge_config: dict[str, Any]


class Selector(StrictModel):
    """Which devices a deployment targets; the given criteria are ANDed, at least one is required."""

    device_ids: Annotated[list[DeviceId], Field(max_length=LIST_MAX * 100)] | None = None
    group: GroupName | None = None
    labels: Labels | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if self.device_ids is None and self.group is None and not self.labels:
            raise ValueError("give device_ids, group or labels")
        return self


class StrategyKind(StrEnum):
    ALL_AT_ONCE = "all_at_once"
    WAVES = "waves"
    EXPONENTIAL = "exponential"
    BLUE_GREEN = "blue_green"  # stage everywhere at once; a separate signed cut-over switches the group
    AB = "ab"  # split the group by a stable hash into arms running different versions (fleet/abtest.py)
    SHADOW = "shadow"  # stage and shadow everywhere; a passed promotion gate starts a waved canary


Percents = Annotated[list[Annotated[float, Field(gt=0, le=100)]], Field(max_length=100)]


def _check_waves(waves: list[float]) -> None:
    if any(b <= a for a, b in itertools.pairwise(waves)) or waves[-1] != 100:
        raise ValueError("waves must increase strictly and end at 100")


class ShadowSettings(StrictModel):
    """What the devices do: score this share of live inputs with the candidate, within a per-row latency budget."""

    sample_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    max_latency_ms: Annotated[float, Field(gt=0, le=MAX_LATENCY_MS)] = 50.0


class ShadowGate(StrictModel):
    """When the canary may start: agreement and p95 latency bounds hold per cohort over at least N windows."""

    min_agreement: Annotated[float, Field(ge=0, le=1)] = 0.95
    max_latency_ms: Annotated[float, Field(gt=0, le=MAX_LATENCY_MS)] = 50.0  # the candidate's p95 per row
    min_windows: Annotated[int, Field(ge=1, le=1_000_000)] = 3
    confidence: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95
    max_wait_s: Annotated[float, Field(gt=0, le=MAX_WAVE_TIMEOUT_S)] = 3600.0  # inconclusive after this: failed


class Strategy(StrictModel):
    """How to roll out: in one go, in percent waves, or exponentially growing waves, with health gates."""

    kind: StrategyKind = StrategyKind.ALL_AT_ONCE
    waves: Annotated[list[Annotated[float, Field(gt=0, le=100)]], Field(max_length=100)] | None = None
    base_count: PositiveInt32 = 1
    increment_factor: Annotated[float, Field(gt=1, le=100)] = 2.0
    failure_threshold: Annotated[float, Field(ge=0, le=1)] = 0.1
    min_finished: PositiveInt32 = 1
    wave_timeout_s: Annotated[float, Field(gt=0, le=MAX_WAVE_TIMEOUT_S)] = 600.0
    ab: ExperimentDesign | None = None  # kind ab only
    shadow: ShadowSettings | None = None  # kind shadow only
    gate: ShadowGate | None = None  # kind shadow only
    then_waves: Percents | None = None  # kind shadow only: the canary's waves once the gate passes

    @model_validator(mode="after")
    def _ab_given(self) -> Strategy:
        if (self.kind == StrategyKind.AB) != (self.ab is not None):
            raise ValueError("strategy kind ab needs an ab design (arms, mde, ...), and only it takes one")
        return self

    @model_validator(mode="after")
    def _waves_given(self) -> Strategy:
        if self.kind == StrategyKind.WAVES:
            if not self.waves:
                raise ValueError("waves strategy needs a percent list such as [1, 10, 50, 100]")
            _check_waves(self.waves)
        if self.kind == StrategyKind.SHADOW:
            self.shadow = self.shadow or ShadowSettings()
            self.gate = self.gate or ShadowGate()
            self.then_waves = self.then_waves or [10.0, 50.0, 100.0]
            _check_waves(self.then_waves)
        elif self.shadow is not None or self.gate is not None or self.then_waves is not None:
            raise ValueError("shadow, gate and then_waves belong to the shadow strategy")
        return self


class DeploymentCreate(StrictModel):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    version: PositiveInt32 | None = None
    alias: Annotated[str | None, Field(min_length=1, max_length=100)] = None
    quantization: Label | None = None
    selector: Selector
    strategy: Strategy = Field(default_factory=Strategy)
    max_latency_ms: Annotated[float | None, Field(gt=0, le=MAX_LATENCY_MS)] = None

    @model_validator(mode="after")
    def _one_version(self) -> DeploymentCreate:
        if self.strategy.kind == StrategyKind.AB:
            if self.version is not None or self.alias is not None:
                raise ValueError("an ab deployment names its versions in strategy.ab.arms, not version or alias")
            return self
        if (self.version is None) == (self.alias is None):
            raise ValueError("give exactly one of version or alias")
        return self


class RolloutProgress(BaseModel):
    total: int
    by_state: dict[str, int]
    issued: int
    succeeded: int
    failed: int
    finished: int


class RolloutRead(BaseModel):
    id: str
    deployment_id: str
    kind: str
    rollback_of: str | None
    state: RolloutState
    model: dict[str, Any]
    artifact_sha256: str
    wave_plan: list[int]
    current_wave: int
    failure_threshold: float
    min_finished: int
    wave_timeout_s: float
    reason: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    progress: RolloutProgress


class RolloutTargetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    wave: int
    state: str
    sequence: int | None
    reason: str | None
    issued_at: datetime | None
    finished_at: datetime | None


class RolloutAction(StrictModel):
    reason: Annotated[str, Field(max_length=500)] = ""


ROLLBACK_KINDS = (StrategyKind.ALL_AT_ONCE, StrategyKind.WAVES, StrategyKind.EXPONENTIAL)


def check_rollback_strategy(strategy: Strategy) -> None:
    """Refuse a rollback strategy that is not a plain or waved rollout (a rollback has one version, no stage)."""
    if strategy.kind not in ROLLBACK_KINDS:
        raise ValueError(f"a rollback rolls out in one go or in waves, not as {strategy.kind.value}")


class RollbackRequest(RolloutAction):
    strategy: Strategy = Field(default_factory=Strategy)

    @model_validator(mode="after")
    def _plain_or_waved(self) -> RollbackRequest:
        check_rollback_strategy(self.strategy)
        return self


class DeviceEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: str | None
    device_id: str | None
    kind: str
    state: str | None
    rollout_id: str | None
    sequence: int | None
    accepted: bool
    reason: str | None
    received_at: datetime


class SigningKeyRead(BaseModel):
    key_id: str
    public_key: str
    algorithm: str = "ed25519"


class ManifestEnvelope(BaseModel):
    payload: str
    signature: str
    key_id: str


class CutoverRequest(StrictModel):
    """Switch a staged blue-green group to the new model, or back to the old one, now or at a set time."""

    to: Literal["new", "old"] = "new"
    at: AwareDatetime | None = None  # a naive time would be read in the server's zone
    reason: ShortText = ""


class BlueGreenRead(BaseModel):
    """Where a blue-green rollout stands: staged targets, the last cut-over and what the devices report."""

    rollout_id: str
    targets: int
    staged: int
    not_staged: int
    last_cutover: dict[str, Any] | None
    switched: int
    not_switched: int
    pending: int
    serving: dict[str, int]


class ShadowCohortRead(BaseModel):
    """The candidate beside the active model in one cohort (device group), with confidence intervals."""

    cohort: str
    devices: int
    windows: int
    samples: int
    rows: int
    agree: int
    agreement: dict[str, float | None]  # estimate, lower, upper (Wilson)
    error_rate: dict[str, float | None]  # candidate errors / samples (Wilson)
    candidate_p50_ms: dict[str, float | None]  # estimate, lower, upper from the histogram (inf = beyond 1 s)
    candidate_p95_ms: dict[str, float | None]
    active_p50_ms: dict[str, float | None]
    active_p95_ms: dict[str, float | None]
    dropped: int
    stopped: dict[str, int]  # device count per stop reason
    candidate_labels: dict[str, int]
    error_counts: list[int] | None  # regression: |candidate - active| histogram
    verdict: str  # pass | fail | inconclusive
    reasons: list[str]


class ShadowReportRead(BaseModel):
    """A shadow rollout's comparison per cohort, its gate and what the gate decided."""

    rollout_id: str
    state: str
    candidate: dict[str, Any]
    settings: dict[str, Any]
    gate: dict[str, Any]
    confidence: float
    latency_buckets_ms: list[float]
    error_buckets: list[float]
    windows: int
    verdict: str  # pass | fail | waiting | ended (the rollout ended otherwise, e.g. aborted, before the gate decided)
    reasons: list[str]
    canary_rollout_id: str | None
    cohorts: list[ShadowCohortRead]

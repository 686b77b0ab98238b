"""A/B experiment bodies: the pre-registered design (arms, effect, alpha, power) and the experiment report."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.constraints import FiniteFloat, Label, PositiveInt32

MIN_ARMS, MAX_ARMS = 2, 5
WEIGHT_TOLERANCE = 1e-6
MAX_SAMPLES_PER_DEVICE = 10**9


class ArmSpec(BaseModel):
    """One arm: a model version and the share of the group that runs it."""

    model_config = ConfigDict(extra="forbid")

    version: PositiveInt32
    weight: Annotated[FiniteFloat, Field(gt=0, le=1)]


class ExperimentDesign(BaseModel):
    """The pre-registered design of an A/B test: arms (the first is the control), effect, alpha and power.

    The metric is accuracy from delayed labels; `baseline_rate` is the control arm's expected accuracy and `mde` the
    smallest absolute difference worth detecting. `expected_samples_per_device` is how many labelled predictions one
    device is expected to contribute by the horizon; with it the API refuses a split too small for the effect.
    """

    model_config = ConfigDict(extra="forbid")

    arms: Annotated[list[ArmSpec], Field(min_length=MIN_ARMS, max_length=MAX_ARMS)]
    mde: Annotated[FiniteFloat, Field(gt=0, lt=1)]
    alpha: Annotated[FiniteFloat, Field(gt=0, le=0.2)] = 0.05
    power: Annotated[FiniteFloat, Field(ge=0.5, lt=1)] = 0.8
    baseline_rate: Annotated[FiniteFloat, Field(gt=0, lt=1)] = 0.9
    expected_samples_per_device: Annotated[int, Field(ge=1, le=MAX_SAMPLES_PER_DEVICE)]
    metric: Literal["accuracy"] = "accuracy"
    salt: Label | None = Field(default=None, description=(
        "Hash devices with this instead of the experiment id, e.g. to repeat an earlier test's split."))

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentDesign:
        total = math.fsum(arm.weight for arm in self.arms)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"arm weights must sum to 1 (they sum to {total:g})")
        versions = [arm.version for arm in self.arms]
        if len(set(versions)) != len(versions):
            raise ValueError("each arm must run a different version")
        if self.baseline_rate + self.mde >= 1 and self.baseline_rate - self.mde <= 0:
            raise ValueError("mde is too large for baseline_rate: neither rate +/- mde is a proportion")
        return self


class ArmRead(BaseModel):
    """One arm's devices, labelled outcomes and accuracy with its Wilson interval."""

    index: int
    version: int
    weight: float
    devices: int
    n: int
    correct: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    n_total: int = Field(description="All labelled predictions so far; n counts those up to the horizon.")
    predictions: dict[str, int] = Field(description="Predicted class counts from the arm's telemetry sketches.")


class ComparisonRead(BaseModel):
    """One treatment arm against the control: difference (treatment - control), its interval and the test."""

    arm: int
    control: int
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    method: str | None
    statistic: float | None
    p_value: float | None
    significant: bool


class DistributionRead(BaseModel):
    """Chi-square test of homogeneity on the arms' predicted class counts."""

    chi2: float | None
    dof: int
    p_value: float | None
    classes: list[str]


class ExperimentRead(BaseModel):
    """Where an A/B test stands: per-arm n, rates, intervals, p-values, the required n and the decision."""

    id: str
    rollout_id: str
    deployment_id: str
    model: str
    state: str
    design: dict[str, Any]
    required_per_arm: int
    alpha_per_comparison: float
    horizon_reached: bool
    arms: list[ArmRead]
    comparisons: list[ComparisonRead]
    predictions: DistributionRead | None
    winner: dict[str, int] | None
    reason: str
    decided_at: datetime | None
    proposal_id: str | None
    promotion_rollout_id: str | None
    created_by: str
    created_at: datetime

"""Drift API bodies: monitor config, exact comparisons, drift reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from control_plane.constraints import FiniteFloat, Name, NonNegativeInt32, NonNegativeInt64, PositiveInt32
from control_plane.drift.selection import Correction, Method

MAX_EXACT_VALUES = 5_000_000  # rows x columns of one exact comparison, both sides together
EXACT_INTEGER_LIMIT = 2**53  # every integer up to here has its own float64; larger ones would merge silently

# A JSON number or null (missing): strict, so true/false and numeric strings are refused, not coerced to 1.0.
Value = Annotated[float, Strict()] | None
Rows = list[list[Value]]


def _refuse_inexact_integers(rows: Any, name: str) -> None:
    if not isinstance(rows, list):
        return
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            continue
        for j, value in enumerate(row):
            if type(value) is int and not -EXACT_INTEGER_LIMIT <= value <= EXACT_INTEGER_LIMIT:
                raise ValueError(f"{name}[{i}][{j}]: integer beyond 2**53 cannot be compared exactly as a float64")

MAX_FEATURES = 10_000
MAX_LOOKBACK_SECONDS = 366 * 86_400.0

class MonitorConfig(BaseModel):
    """Thresholds of one monitor; each check raises at one level and clears at a calmer one (hysteresis)."""

    # NaN and Infinity compare false with everything and cannot be stored as JSON: refused, never a 500.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lookback_seconds: float = Field(default=3600.0, gt=0, le=MAX_LOOKBACK_SECONDS)
    min_samples: PositiveInt32 = Field(default=200, description="Rows (or labelled rows) before a check is evaluated.")
    alpha: float = Field(default=0.01, gt=0, lt=1, description="Significance after the correction.")
    correction: Correction = "bh"
    psi_raise: float = Field(default=0.2, gt=0)
    psi_clear: float = Field(default=0.1, ge=0)
    psi_critical: float = Field(default=0.5, gt=0)
    missing_rate_raise: float = Field(default=0.05, gt=0, le=1)
    missing_rate_clear: float = Field(default=0.02, ge=0, le=1)
    out_of_range_raise: float = Field(default=0.05, gt=0, le=1)
    out_of_range_clear: float = Field(default=0.02, ge=0, le=1)
    error_rate_raise: float = Field(default=0.05, gt=0, le=1)
    error_rate_clear: float = Field(default=0.02, ge=0, le=1)
    latency_p95_ms_raise: float | None = Field(default=None, gt=0)
    latency_p95_ms_clear: float | None = Field(default=None, gt=0)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    accuracy_drop: float = Field(default=0.05, ge=0, le=1, description="Below the version's metrics.accuracy by this.")
    raise_after: PositiveInt32 = Field(default=2, description="Consecutive raising evaluations before an alert opens.")
    clear_after: PositiveInt32 = Field(default=3, description="Consecutive calm evaluations before it auto-resolves.")

    @model_validator(mode="after")
    def _bands(self) -> MonitorConfig:
        pairs = [("psi", self.psi_raise, self.psi_clear), ("missing_rate", self.missing_rate_raise,
                 self.missing_rate_clear), ("out_of_range", self.out_of_range_raise, self.out_of_range_clear),
                 ("error_rate", self.error_rate_raise, self.error_rate_clear)]
        if self.latency_p95_ms_raise is not None:
            pairs.append(("latency_p95_ms", self.latency_p95_ms_raise,
                          self.latency_p95_ms_clear or self.latency_p95_ms_raise * 0.8))
        for name, raise_at, clear_at in pairs:
            if clear_at > raise_at:
                raise ValueError(f"{name}: the clear threshold must not exceed the raise threshold")
        return self


class MonitorCreate(BaseModel):
    """A monitor for a model (all versions), one version, or one deployment of it."""

    model_config = ConfigDict(extra="forbid")

    model_name: Name
    model_version: PositiveInt32 | None = None
    deployment_id: Annotated[str | None, Field(max_length=40)] = None
    config: MonitorConfig = Field(default_factory=MonitorConfig)
    enabled: bool = True


class MonitorRead(BaseModel):
    """A stored monitor."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    model_name: str
    model_version: int | None
    deployment_id: str | None
    config: dict[str, Any]
    enabled: bool
    created_by: str
    created_at: datetime


class EvaluateRequest(BaseModel):
    """Run the monitors now, for one model (version) or for every model with recent windows."""

    # strict: JSON true is not version 1 (lax mode would coerce it; found by schemathesis).
    model_config = ConfigDict(extra="forbid", strict=True)

    model_name: Name | None = None
    model_version: PositiveInt32 | None = None


class CheckOutcome(BaseModel):
    """One check's result in one evaluation."""

    fingerprint: str
    check: str
    feature: str | None
    value: float | None
    raising: bool
    clearing: bool
    active: bool
    alert_id: str | None = None
    action: Literal["none", "opened", "refreshed", "resolved"] = "none"


class EvaluateResult(BaseModel):
    """What one monitor pass did."""

    evaluated: int
    outcomes: list[CheckOutcome]


class ExactReference(BaseModel):
    """Either a registered dataset's baseline (binned comparison) or raw reference rows (exact)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset_id: Name | None = None
    rows: Rows | None = None

    @model_validator(mode="before")
    @classmethod
    def _exact_integers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _refuse_inexact_integers(data.get("rows"), "rows")
        return data

    @model_validator(mode="after")
    def _one(self) -> ExactReference:
        if (self.dataset_id is None) == (self.rows is None):
            raise ValueError("give exactly one of dataset_id or rows")
        return self


class ExactRequest(BaseModel):
    """Raw samples to compare: `current` rows against a reference."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reference: ExactReference
    current: Annotated[Rows, Field(min_length=1)]
    feature_names: Annotated[list[Name], Field(max_length=MAX_FEATURES)] | None = None
    categorical: Annotated[list[NonNegativeInt32], Field(max_length=MAX_FEATURES)] = Field(default_factory=list)
    method: Method = "auto"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Correction = "bh"
    min_samples: PositiveInt32 = 30
    min_effect: float = Field(default=0.025, ge=0, le=1, description="KS D / total variation a change must "
                              "significantly exceed (docs/drift.md, Decision rule); 0 gives the plain tests.")

    @model_validator(mode="before")
    @classmethod
    def _exact_integers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _refuse_inexact_integers(data.get("current"), "current")
        return data


class FeatureBucket(BaseModel):
    """One feature in one time bucket of a drift report."""

    feature: str
    test: str
    statistic: float
    psi: float
    band: str
    p_adjusted: float | None
    drifted: bool
    n_current: int
    missing_rate: float | None = None
    out_of_range_rate: float | None = None


class ReportBucket(BaseModel):
    """A time bucket of merged windows."""

    start: float
    end: float
    windows: int
    devices: int
    n: int
    error_rate: float | None
    latency_p95_ms: float | None
    features: list[FeatureBucket]


class DriftReportRead(BaseModel):
    """Drift of one model version over time buckets (and over the whole range)."""

    model_name: str
    model_version: int
    baseline_id: str | None
    since: float
    until: float
    bucket_seconds: float
    cohort: dict[str, str | None]
    overall: ReportBucket | None
    buckets: list[ReportBucket]
    invalid_baselines: dict[str, str] = Field(
        default_factory=dict, description="Baselines of windows in range that cannot be used, with the reason.")
    shadow: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Shadow rollouts in range that ran this version as the candidate: the gate's verdict and, per cohort, "
        "agreement with the active model and the candidate's p95 latency with their intervals."))


class LabelEntry(BaseModel):
    """Ground truth for one window: (predicted class, true class, count) triples."""

    model_config = ConfigDict(extra="forbid")

    device_id: Annotated[str, Field(min_length=1, max_length=200)]
    window_seq: NonNegativeInt64
    confusion: Annotated[list[tuple[FiniteFloat, FiniteFloat, NonNegativeInt64]],
                         Field(min_length=1, max_length=10_000)]


class LabelsCreate(BaseModel):
    """A batch of delayed labels."""

    model_config = ConfigDict(extra="forbid")

    labels: Annotated[list[LabelEntry], Field(min_length=1, max_length=10_000)]


class LabelsResult(BaseModel):
    """What a labels post stored."""

    stored: int
    replaced: int
    unknown_windows: list[list[str | int]]  # [device_id, window_seq] pairs (a tuple breaks OpenAPI 3.1 tools)

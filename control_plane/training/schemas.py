"""Training API bodies: job states and reads, labelled rows posted for a stored telemetry window."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.constraints import FiniteFloat, Name, NonNegativeInt32, NonNegativeInt64

MAX_ROWS_PER_WINDOW = 1_000
MAX_FEATURES = 4_096


class JobState(StrEnum):
    """queued -> running -> succeeded | failed (a stale running job is claimed again)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobOutcome(StrEnum):
    """What a succeeded job decided."""

    PROPOSED = "canary_proposed"  # the challenger won by the margin: a rollout.canary proposal awaits approval
    NOT_BETTER = "challenger_not_better"  # registered, compared, not proposed
    NO_NEW_DATA = "no_new_labelled_rows"  # nothing new to learn from: no challenger trained


class WindowRows(BaseModel):
    """Feature rows and their true labels that a device saw during one of its stored telemetry windows."""

    model_config = ConfigDict(extra="forbid")

    device_id: Name
    window_seq: NonNegativeInt64
    features: Annotated[list[Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_FEATURES)]],
                        Field(min_length=1, max_length=MAX_ROWS_PER_WINDOW)]
    labels: Annotated[list[NonNegativeInt32], Field(min_length=1, max_length=MAX_ROWS_PER_WINDOW)]

    @model_validator(mode="after")
    def _aligned(self) -> WindowRows:
        if len(self.features) != len(self.labels):
            raise ValueError("features and labels need one entry per row")
        if len({len(row) for row in self.features}) != 1:
            raise ValueError("every row needs the same number of features")
        return self


class RowsCreate(BaseModel):
    """A batch of labelled rows, each batch entry joined to a stored telemetry window."""

    model_config = ConfigDict(extra="forbid")

    windows: Annotated[list[WindowRows], Field(min_length=1, max_length=100)]


class RowsResult(BaseModel):
    """What a post stored; windows the telemetry store does not know are listed and not stored."""

    stored_windows: int
    stored_rows: int
    replaced: int
    unknown_windows: list[list[str | int]]


class JobRead(BaseModel):
    """A training job with what it used, what it measured and what it decided."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    retrain_request_id: str | None
    incident_id: str | None
    model_name: str
    model_version: int
    window_start: datetime
    window_end: datetime
    cohort: dict[str, Any]
    state: JobState
    outcome: str | None
    error: str | None
    attempts: int
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    challenger_version: int | None
    challenger_version_id: str | None
    proposal_id: str | None
    data: dict[str, Any]
    comparison: dict[str, Any]
    timings: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime | None

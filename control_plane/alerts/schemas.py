"""Alert bodies: what monitors raise and what agents and the UI read."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class AlertState(StrEnum):
    """Lifecycle: open -> acknowledged -> resolved (open -> resolved is allowed too)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertCheck(StrEnum):
    """Which monitor check raised the alert."""

    FEATURE_DRIFT = "feature_drift"
    PREDICTION_DRIFT = "prediction_drift"
    MISSING_RATE = "missing_rate"
    OUT_OF_RANGE = "out_of_range"
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    PERFORMANCE = "performance"


class AlertRaise(BaseModel):
    """What a monitor hands the alert service when a check fires."""

    fingerprint: str
    check: AlertCheck
    severity: Severity
    title: str
    model_name: str
    model_version: int
    deployment_id: str | None = None
    rollout_id: str | None = None
    monitor_id: str | None = None
    feature: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class AlertRead(BaseModel):
    """An alert as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    fingerprint: str
    state: AlertState
    severity: Severity
    check: AlertCheck
    title: str
    model_name: str
    model_version: int
    model_version_id: str | None
    deployment_id: str | None
    rollout_id: str | None
    monitor_id: str | None
    feature: str | None
    evidence: dict[str, Any]
    occurrences: int
    first_seen_at: datetime
    last_seen_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution: str | None
    created_at: datetime


class AlertNote(BaseModel):
    """Optional note on acknowledge or resolve."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=2000)] = ""


class AlertPage(BaseModel):
    """A page of alerts, newest first."""

    items: list[AlertRead]
    total: int

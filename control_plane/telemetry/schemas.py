"""Telemetry API bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class WindowResult(BaseModel):
    """What became of one posted window, in request order: `stored`, `duplicate` or `quarantined`."""

    status: str
    window_seq: int | None = None
    reason: str | None = None


class IngestSummary(BaseModel):
    """What an ingest call did: counts per outcome and per quarantine reason, and each window's result.

    A device may forget every window whose result is `stored` or `duplicate`; a `quarantined` one will never
    be stored (resending it does not help), and a request that fails as a whole stored nothing.
    """

    received: int
    stored: int
    duplicates: int
    quarantined: dict[str, int]
    windows: list[WindowResult] = []


class WindowRead(BaseModel):
    """A stored window's identity (its counts stay in the sketch)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: str
    window_seq: int
    model_name: str
    model_version: int
    baseline_id: str
    window_start: float
    window_end: float
    received_at: float
    device_group: str | None
    rollout_id: str | None
    deployment_id: str | None
    n: int
    calls: int
    errors: int
    dropped_windows: int


class QuarantineRead(BaseModel):
    """A quarantined message."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    received_at: float
    source: str
    topic: str | None
    device_id: str | None
    window_seq: int | None
    reason: str
    detail: str
    payload_size: int
    payload: str


class TelemetryStats(BaseModel):
    """Stored and quarantined totals, plus this process's ingest counters."""

    windows: int
    quarantined: dict[str, int]
    process: dict[str, Any]

"""Telemetry routes: HTTP ingest for devices (same code path as MQTT), windows, quarantine, labels."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from control_plane.constraints import Name as Identifier
from control_plane.constraints import ParamPositiveInt32
from control_plane.deps import Device, Reader, SessionDep, Writer
from control_plane.drift.schemas import LabelsCreate, LabelsResult
from control_plane.errors import PayloadTooLarge
from control_plane.telemetry import service
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, WindowIngestor
from control_plane.telemetry.schemas import IngestSummary, QuarantineRead, TelemetryStats, WindowRead, WindowResult

router = APIRouter(prefix="/telemetry", tags=["telemetry"])
MAX_WINDOWS_PER_REQUEST = 1000


def ingestor(request: Request) -> WindowIngestor:
    """Return this app's HTTP ingestor (created on first use, so its rate limiter persists across requests)."""
    state = request.app.state
    if getattr(state, "telemetry_ingestor", None) is None:
        state.telemetry_ingestor = WindowIngestor(TelemetrySettings())
    found: WindowIngestor = state.telemetry_ingestor
    return found


@router.post("/windows", response_model=IngestSummary)
def ingest_windows(request: Request, session: SessionDep, principal: Device,
                   body: Annotated[Any, Body(description="One telemetry window or a list of them.")]) -> IngestSummary:
    """Ingest windows from the calling device; invalid ones are quarantined, duplicates counted."""
    items = body if isinstance(body, list) else [body]
    if len(items) > MAX_WINDOWS_PER_REQUEST:
        raise PayloadTooLarge(f"at most {MAX_WINDOWS_PER_REQUEST} windows per request")
    now = time.time()
    messages = [_message(item, now, principal.device_id) for item in items]
    http_ingestor = ingestor(request)
    result = http_ingestor.ingest(session, messages, now=now)
    http_ingestor.totals.add(result)
    scheduler = getattr(request.app.state, "drift_scheduler", None)
    if scheduler is not None and result.models:
        scheduler.mark(result.models)
    results = [WindowResult(status=o.status, window_seq=o.window_seq, reason=o.reason) for o in result.outcomes]
    return IngestSummary(**result.as_dict(), windows=results)


def _message(item: Any, now: float, device_id: str | None) -> IncomingMessage:
    """Re-encode one posted window for the shared ingest path; one that cannot be encoded is quarantined."""
    try:
        payload, problem = json.dumps(item, separators=(",", ":")).encode(), None
    except RecursionError:
        payload, problem = b"", ("too_deep", "window nested too deeply to encode")
    except (TypeError, ValueError) as exc:
        payload, problem = b"", ("malformed", f"window cannot be encoded: {type(exc).__name__}")
    return IncomingMessage(payload=payload, received_at=now, source="http", device_hint=device_id, problem=problem)


@router.get("/windows", response_model=list[WindowRead])
def list_windows(session: SessionDep, _: Reader, model: Identifier | None = None,
                 version: ParamPositiveInt32 | None = None, device_id: Identifier | None = None,
                 since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[WindowRead]:
    """List stored windows, newest first (`since` in Unix seconds)."""
    rows = service.list_windows(session=session, model=model, version=version, device_id=device_id, since=since,
                                limit=limit)
    return [WindowRead.model_validate(r) for r in rows]


@router.get("/quarantine", response_model=list[QuarantineRead])
def list_quarantine(session: SessionDep, _: Reader, reason: Identifier | None = None,
                    device_id: Identifier | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[QuarantineRead]:
    """List quarantined messages with their reason and truncated payload."""
    rows = service.list_quarantine(session=session, reason=reason, device_id=device_id, limit=limit)
    return [QuarantineRead.model_validate(r) for r in rows]


@router.get("/stats", response_model=TelemetryStats)
def stats(request: Request, session: SessionDep, _: Reader) -> TelemetryStats:
    """Return stored/quarantined totals and this process's ingest counters (duplicates included)."""
    windows, quarantined = service.totals(session=session)
    process: dict[str, Any] = {}
    for consumer in getattr(request.app.state, "telemetry_consumers", []):
        process[consumer.name] = consumer.totals.as_dict()
    http = getattr(request.app.state, "telemetry_ingestor", None)
    if http is not None:
        process["http"] = http.totals.as_dict()
    return TelemetryStats(windows=windows, quarantined=quarantined, process=process)


@router.post("/labels", response_model=LabelsResult)
def post_labels(body: LabelsCreate, session: SessionDep, principal: Writer) -> LabelsResult:
    """Attach delayed ground truth to windows: per (device_id, window_seq) a list of [predicted, actual, count]."""
    return service.post_labels(session=session, request=body, actor=principal.actor)

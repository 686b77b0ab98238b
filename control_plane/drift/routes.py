"""Drift routes: exact comparisons, drift reports over time, monitors and on-demand evaluation."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import select

from control_plane.audit import service as audit
from control_plane.constraints import Name, ParamDateTime, ParamPositiveInt32
from control_plane.deps import Reader, SessionDep, Writer
from control_plane.drift import monitor as monitors
from control_plane.drift import service
from control_plane.drift.models import DriftMonitor
from control_plane.drift.schemas import (
    MAX_LOOKBACK_SECONDS,
    DriftReportRead,
    EvaluateRequest,
    EvaluateResult,
    ExactRequest,
    MonitorCreate,
    MonitorRead,
)
from control_plane.drift.selection import DriftConfig
from control_plane.errors import Conflict, NotFound
from control_plane.telemetry.lookup import BaselineCache
from control_plane.telemetry.models import TelemetryWindowRow

router = APIRouter(prefix="/drift", tags=["drift"])


def baseline_cache(request: Request) -> BaselineCache:
    """Return this app's baseline cache (shared with its monitor when one runs)."""
    state = request.app.state
    if getattr(state, "baseline_cache", None) is None:
        state.baseline_cache = BaselineCache()
    cache: BaselineCache = state.baseline_cache
    return cache


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@router.post("/exact")
def exact(body: ExactRequest, session: SessionDep, _: Reader) -> dict[str, Any]:
    """Compare a batch of raw rows with reference rows (exact KS) or a dataset's baseline bins."""
    report: dict[str, Any] = _json_safe(service.exact_drift(session=session, request=body).to_dict())
    return report


@router.get("/report", response_model=DriftReportRead)
def report(
    request: Request, session: SessionDep, _: Reader,
    model: Annotated[str, Query(min_length=1, max_length=200)],
    version: ParamPositiveInt32,
    since: ParamDateTime | None = None, until: ParamDateTime | None = None,
    bucket_seconds: Annotated[float, Query(gt=0, le=MAX_LOOKBACK_SECONDS, allow_inf_nan=False)] = 3600.0,
    device_group: Name | None = None, rollout_id: Name | None = None, deployment_id: Name | None = None,
    alpha: Annotated[float, Query(gt=0, lt=1, allow_inf_nan=False)] = 0.05,
) -> DriftReportRead:
    """Return per-feature drift of a model version per time bucket (default: the last 24 h in 1 h buckets)."""
    end = until.timestamp() if until else time.time()
    start = since.timestamp() if since else end - 86400.0
    scope = service.WindowScope(model, version, start, end, device_group, rollout_id, deployment_id)
    found = service.drift_report(session=session, baselines=baseline_cache(request), scope=scope,
                                 bucket_seconds=bucket_seconds, config=DriftConfig(alpha=alpha))
    from control_plane.fleet import shadow  # the fleet's comparison of this version as a shadow candidate

    return found.model_copy(update={"shadow": shadow.summaries(session, model, version, start, end, device_group)})


@router.post("/monitors", response_model=MonitorRead, status_code=status.HTTP_201_CREATED)
def create_monitor(body: MonitorCreate, session: SessionDep, principal: Writer) -> MonitorRead:
    """Configure thresholds for a model, a version or a deployment."""
    return MonitorRead.model_validate(_create_monitor(session, body, principal.actor))


def _create_monitor(session: Any, body: MonitorCreate, actor: str) -> DriftMonitor:
    duplicate = session.scalar(select(DriftMonitor.id).where(
        DriftMonitor.model_name == body.model_name, DriftMonitor.model_version.is_(None) if body.model_version is None
        else DriftMonitor.model_version == body.model_version,
        DriftMonitor.deployment_id.is_(None) if body.deployment_id is None
        else DriftMonitor.deployment_id == body.deployment_id))
    if duplicate is not None:
        raise Conflict("a monitor with this scope exists", id=duplicate)
    monitor = DriftMonitor(model_name=body.model_name, model_version=body.model_version,
                           deployment_id=body.deployment_id, config=body.config.model_dump(), enabled=body.enabled,
                           created_by=actor)
    session.add(monitor)
    session.flush()
    audit.record(session, actor=actor, action="drift_monitor.create", resource=("drift_monitor", monitor.id),
                 data=body.model_dump(mode="json"))
    return monitor


@router.get("/monitors", response_model=list[MonitorRead])
def list_monitors(session: SessionDep, _: Reader, model: Name | None = None) -> list[MonitorRead]:
    """List monitors."""
    query = select(DriftMonitor).order_by(DriftMonitor.model_name, DriftMonitor.created_at)
    rows = session.scalars(query.where(DriftMonitor.model_name == model) if model else query)
    return [MonitorRead.model_validate(m) for m in rows]


@router.get("/monitors/{monitor_id}", response_model=MonitorRead)
def get_monitor(monitor_id: Name, session: SessionDep, _: Reader) -> MonitorRead:
    """Return one monitor."""
    monitor = session.get(DriftMonitor, monitor_id)
    if monitor is None:
        raise NotFound(f"monitor {monitor_id!r} not found")
    return MonitorRead.model_validate(monitor)


@router.post("/evaluate", response_model=EvaluateResult)
def evaluate(body: EvaluateRequest, request: Request, session: SessionDep, _: Writer) -> EvaluateResult:
    """Run the monitors now (for one model, one version, or every model with recent windows)."""
    only = None
    if body.model_name is not None:
        versions = [body.model_version] if body.model_version is not None else _versions(session, body.model_name)
        only = [(body.model_name, v) for v in versions]
    outcomes = monitors.evaluate(session, baseline_cache(request), only=only)
    return EvaluateResult(evaluated=len({o.fingerprint for o in outcomes}), outcomes=outcomes)


def _versions(session: Any, model_name: str) -> list[int]:
    return [int(v) for v in session.scalars(select(TelemetryWindowRow.model_version)
                                            .where(TelemetryWindowRow.model_name == model_name).distinct())]

"""Probes (/healthz, /readyz) and the Prometheus endpoint (/metrics), installed on every app."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import ProcessCollector as OsProcessCollector
from sqlalchemy import text

from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.deps import Authorize, SessionDep
from control_plane.errors import ServiceUnavailable
from control_plane.observability.collectors import DatabaseCollector, ProcessCollector
from control_plane.observability.http_metrics import HttpMetrics
from control_plane.observability.request_context import RequestObservability
from control_plane.settings import Settings

router = APIRouter()
_bearer = HTTPBearer(auto_error=False)


class MetricsScraper(Authorize):
    """Admit a scraper holding the scrape-only ``metrics_token``, or any token with the read scope (viewer and up)."""

    def __init__(self) -> None:
        super().__init__(Scope.READ)

    async def __call__(  # type: ignore[override]
        self,
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal | None:
        metrics_token = request.app.state.settings.metrics_token
        if metrics_token is not None and credentials is not None and hmac.compare_digest(
                credentials.credentials.encode(), metrics_token.get_secret_value().encode()):
            return None  # the scrape token opens /metrics and nothing else
        return await super().__call__(request, session, credentials)


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _broker_state(state: Any) -> str:
    clients = [getattr(state, "fleet_bridge", None), *(getattr(state, "telemetry_consumers", None) or [])]
    clients = [c for c in clients if c is not None]
    if not clients:
        return "not started"
    down = [getattr(c, "name", "fleet-bridge") for c in clients if not c.connection.connected.is_set()]
    return f"disconnected: {', '.join(down)}" if down else "ok"


@router.get("/readyz", tags=["health"])
def readyz(request: Request) -> dict[str, Any]:
    """Readiness: the database answers and is migrated, and the broker is connected when MQTT is configured."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with state.database.transaction(write=False) as session:
            session.execute(text("SELECT seq FROM audit_head"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"failed: {type(exc).__name__}"
    checks["broker"] = _broker_state(state) if state.settings.mqtt_url else "not configured"
    failed = sorted(name for name, result in checks.items() if result not in ("ok", "not configured"))
    if failed:
        raise ServiceUnavailable(f"not ready: {', '.join(failed)}", failed=failed, checks=checks)
    return {"status": "ready", "checks": checks}


@router.get("/metrics", tags=["health"], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
def metrics(request: Request, _scraper: Annotated[Principal | None, Depends(MetricsScraper())]) -> Response:
    """Prometheus metrics of this process and of the shared database (see docs/observability.md)."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Give ``app`` its own metrics registry, the request-id/metrics middleware and the probe and metrics routes."""
    registry = CollectorRegistry()  # per app, never the global default: tests and replicas build many apps
    app.state.metrics_registry = registry
    http_metrics = HttpMetrics(registry)
    registry.register(ProcessCollector(app.state))
    registry.register(DatabaseCollector(app.state.database, settings.metrics_cache_seconds))
    OsProcessCollector(registry=registry)  # CPU, memory, open files of this process (Linux)
    app.add_middleware(RequestObservability, metrics=http_metrics, log_requests=settings.access_log)
    app.include_router(router)

"""The versioned API: every domain's router under /api/v1."""

from __future__ import annotations

from fastapi import FastAPI

from control_plane.alerts.routes import router as alerts_router
from control_plane.approvals.routes import router as approvals_router
from control_plane.assistant.routes import router as assistant_router
from control_plane.audit.routes import router as audit_router
from control_plane.auth.routes import router as auth_router
from control_plane.drift.routes import router as drift_router
from control_plane.errors import API_ERROR_RESPONSES
from control_plane.evals.routes import router as evals_router
from control_plane.events.routes import router as events_router
from control_plane.fleet.abtest_routes import router as experiments_router
from control_plane.fleet.routes import router as fleet_router
from control_plane.governance.routes import router as governance_router
from control_plane.incidents.routes import router as incidents_router
from control_plane.lineage.routes import router as lineage_router
from control_plane.prompts.routes import router as prompts_router
from control_plane.registry.routes import router as registry_router
from control_plane.telemetry.routes import router as telemetry_router
from control_plane.training.routes import router as training_router

API_PREFIX = "/api/v1"


def include_api_routers(app: FastAPI) -> None:
    """Mount every domain's router under /api/v1."""
    # Each domain router is included in the app directly, not through one /api/v1 router: FastAPI matches nested
    # included routers level by level on every request, and the extra level cost more than some handlers' SQL.
    # Every route shares the error body (control_plane.errors), so it is documented once, for all of them.
    domains = (auth_router, registry_router, lineage_router, audit_router, fleet_router, experiments_router,
               telemetry_router, drift_router, alerts_router, prompts_router, evals_router, training_router)
    agentic = (incidents_router, approvals_router, events_router, assistant_router, governance_router)
    for domain_router in (*domains, *agentic):
        app.include_router(domain_router, prefix=API_PREFIX, responses=API_ERROR_RESPONSES)

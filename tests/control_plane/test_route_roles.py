"""Every route that changes state requires a scope, and every non-health read requires a token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from control_plane.deps import Authorize
from control_plane.main import create_app
from control_plane.settings import Settings
from control_plane.ui.auth import checked_form, current_viewer

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Probes must answer without credentials (load balancers, orchestrators); nothing else may.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
# The web UI's sign-in page is public by nature; it checks its own pre-login CSRF token.
UI_PUBLIC_PATHS = frozenset({"/ui/login"})


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The full app; building it touches no database, so one per module is enough."""
    data_dir: Path = tmp_path_factory.mktemp("route-roles")
    return create_app(Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'unused.db'}"))


def authorizers(dependant: Dependant) -> Iterator[Authorize]:
    """Yield every Authorize instance in a dependency tree (route-, router- and parameter-level)."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Authorize):
            yield dependency.call
        yield from authorizers(dependency)


@dataclass(frozen=True)
class Endpoint:
    """One API route as served: its full path, methods and effective dependency tree."""

    path: str
    methods: frozenset[str]
    dependant: Dependant


def api_routes(app: FastAPI) -> list[Endpoint]:
    """Return every API route with router-level dependencies merged in, as the OpenAPI generator sees them."""
    # FastAPI resolves included routers lazily; iter_route_contexts yields the effective (prefixed) routes.
    return [
        Endpoint(context.path or "", frozenset(context.methods or ()), context.dependant)
        for context in routing.iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


def test_the_route_table_is_not_empty(app: FastAPI) -> None:
    paths = {route.path for route in api_routes(app)}
    assert {"/api/v1/models", "/api/v1/audit/verify", "/healthz"} <= paths


def calls(dependant: Dependant) -> Iterator[object]:
    """Yield every dependency callable in a tree."""
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from calls(dependency)


def test_every_write_route_requires_a_scope(app: FastAPI) -> None:
    unguarded = [
        f"{sorted(route.methods & WRITE_METHODS)} {route.path}"
        for route in api_routes(app)
        if route.methods & WRITE_METHODS and not route.path.startswith("/ui/")
        and not any(auth.scopes for auth in authorizers(route.dependant))
    ]
    assert not unguarded, f"write routes without an Authorize(scope) dependency: {unguarded}"


def test_every_ui_route_needs_a_session_and_every_ui_form_a_csrf_token(app: FastAPI) -> None:
    ui_routes = [route for route in api_routes(app) if route.path.startswith("/ui/")]
    assert {"/ui/fleet", "/ui/audit"} <= {route.path for route in ui_routes}
    no_session = [route.path for route in ui_routes
                  if route.path not in UI_PUBLIC_PATHS and current_viewer not in set(calls(route.dependant))]
    no_csrf = [route.path for route in ui_routes if route.methods & WRITE_METHODS
               and route.path not in UI_PUBLIC_PATHS and checked_form not in set(calls(route.dependant))]
    assert not no_session, f"UI pages without a session check: {no_session}"
    assert not no_csrf, f"UI forms without a CSRF check: {no_csrf}"


def test_every_read_route_except_probes_requires_a_token(app: FastAPI) -> None:
    unguarded = [
        route.path
        for route in api_routes(app)
        if "GET" in route.methods and route.path not in PUBLIC_PATHS and not route.path.startswith("/ui/")
        and not any(authorizers(route.dependant))
    ]
    assert not unguarded, f"GET routes without an Authorize dependency: {unguarded}"


def test_probes_stay_public(app: FastAPI) -> None:
    for route in api_routes(app):
        if route.path in PUBLIC_PATHS:
            assert not any(authorizers(route.dependant)), route.path


def test_the_walker_sees_router_level_dependencies() -> None:
    """Guard the guard: a dependency declared on the router, not the endpoint, still counts."""
    from fastapi import APIRouter, Depends

    from control_plane.auth.roles import Scope

    router = APIRouter(dependencies=[Depends(Authorize(Scope.WRITE))])

    @router.post("/thing")
    def create_thing() -> None:
        """Create a thing."""

    @router.get("/open", dependencies=[])
    def read_open() -> None:
        """Read without extra dependencies (still guarded by the router)."""

    bare = FastAPI()
    bare.include_router(router)

    @bare.delete("/unguarded")
    def delete_unguarded() -> None:
        """Delete with no guard at all."""

    scopes = {route.path: [auth.scopes for auth in authorizers(route.dependant)] for route in api_routes(bare)}
    assert scopes == {"/thing": [frozenset({Scope.WRITE})], "/open": [frozenset({Scope.WRITE})], "/unguarded": []}


def test_incident_approval_and_event_routes_need_their_scopes(app: FastAPI) -> None:
    """Agents propose and annotate, only approvers decide, webhooks are admin-only, the stream needs a token."""
    from control_plane.auth.roles import Scope

    expected = {
        ("POST", "/api/v1/proposals"): {Scope.PROPOSE},
        ("POST", "/api/v1/proposals/{proposal_id}/approve"): {Scope.APPROVE},
        ("POST", "/api/v1/proposals/{proposal_id}/reject"): {Scope.APPROVE},
        ("POST", "/api/v1/proposals/{proposal_id}/verification"): {Scope.PROPOSE},
        ("DELETE", "/api/v1/quarantines/{device_id}"): {Scope.APPROVE},
        ("POST", "/api/v1/incidents/{incident_id}/timeline"): {Scope.PROPOSE},
        ("POST", "/api/v1/incidents/{incident_id}/state"): {Scope.WRITE},
        ("PUT", "/api/v1/incidents/correlation-rule"): {Scope.ADMIN},
        ("GET", "/api/v1/events"): {Scope.READ},
        ("POST", "/api/v1/webhooks"): {Scope.ADMIN},
        ("GET", "/api/v1/webhooks"): {Scope.ADMIN},
        ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): {Scope.ADMIN},
    }
    found = {}
    for route in api_routes(app):
        for method in route.methods:
            if (method, route.path) in expected:
                found[(method, route.path)] = set().union(*(auth.scopes for auth in authorizers(route.dependant)))
    assert found == expected

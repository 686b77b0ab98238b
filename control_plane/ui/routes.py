"""Web UI pages for signing in and out, the registry and the audit log; fleet pages live in ``ui/fleet.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from control_plane.audit import service as audit
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Scope
from control_plane.deps import SessionDep, get_database
from control_plane.errors import MAX_DB_INT, Unauthenticated
from control_plane.registry import service as registry
from control_plane.settings import Settings
from control_plane.ui.approvals import router as approvals_router
from control_plane.ui.auth import CheckedForm, CurrentViewer, get_codec
from control_plane.ui.chat import router as chat_router
from control_plane.ui.drift import router as drift_router
from control_plane.ui.experiments import router as experiments_router
from control_plane.ui.fleet import router as fleet_router
from control_plane.ui.governance import router as governance_router
from control_plane.ui.prompts import router as prompts_router
from control_plane.ui.rendering import UI_DIR, build_templates, redirect, render, render_error
from control_plane.ui.session import CSRF_FIELD, SessionCodec, csrf_matches, new_session

router = APIRouter(prefix="/ui", include_in_schema=False)
TokenField = Annotated[str, Form(max_length=500)]


def _safe_next(target: str | None) -> str:
    # Only paths inside the UI: never an absolute URL or a scheme-relative //host (open redirect).
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/fleet"


@router.get("/")
def home(viewer: CurrentViewer) -> Response:
    """Send a signed-in user to the approval queue, the heart of the UI."""
    return redirect("/ui/approvals")


@router.get("/login")
def login_page(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    """Show the sign-in form (with a fresh pre-login CSRF secret in the cookie)."""
    codec = get_codec(request)
    session = codec.read(request) or new_session()
    response = render(request, "login.html", {"viewer": None, "title": "Sign in", "csrf": session.csrf,
                                              "next": _safe_next(next), "error": None})
    codec.write(response, session)
    return response


@router.post("/login")
def login(request: Request, token: TokenField, csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)],
          next: Annotated[str, Form(max_length=2000)] = "/ui/fleet") -> Response:
    """Exchange an API token for a session cookie; the token is checked exactly as the API checks it."""
    codec = get_codec(request)
    session = codec.read(request)
    if not csrf_matches(session, csrf_token):
        return _login_failed(request, codec, "the sign-in form expired: try again", status_code=403)
    try:
        with get_database(request).engine.connect() as connection:
            principal = auth_service.authenticate(connection=connection, bearer=token.strip())
    except Unauthenticated as exc:
        return _login_failed(request, codec, f"sign-in refused: {exc.message}", status_code=401)
    if Scope.READ not in principal.scopes:
        return _login_failed(request, codec, f"role {principal.role.value!r} cannot use the web UI", status_code=403)
    response = redirect(_safe_next(next))
    codec.write(response, new_session(token.strip()))  # a new CSRF secret at login: no session fixation
    return response


def _login_failed(request: Request, codec: SessionCodec, message: str, *, status_code: int) -> Response:
    session = new_session()
    response = render(request, "login.html", {"viewer": None, "title": "Sign in", "csrf": session.csrf,
                                              "next": "/ui/fleet", "error": message}, status_code=status_code)
    codec.write(response, session)
    return response


@router.post("/logout")
def logout(viewer: CurrentViewer, form: CheckedForm) -> Response:
    """End the session (the API token itself stays valid until revoked)."""
    response = redirect("/ui/login")
    SessionCodec.clear(response)
    return response


@router.get("/audit")
def audit_page(
    request: Request, viewer: CurrentViewer, session: SessionDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    resource_type: Annotated[str | None, Query(max_length=50)] = None,
    after_seq: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    verify: bool = False,
) -> Response:
    """Search the audit log; verify the chain on request (it reads every entry); show the newest checkpoint."""
    filters = {"action": action or None, "actor": actor or None, "resource_type": resource_type or None}
    entries = audit.list_entries(session=session, after_seq=after_seq, limit=200, **filters)
    report = audit.verify(session=session, public_key=request.app.state.audit_signer.public_raw) if verify else None
    checkpoints = audit.list_checkpoints(session=session, limit=1)
    return render(request, "audit.html", {
        "viewer": viewer, "title": "Audit log", "entries": [audit.to_read(e) for e in entries], "report": report,
        "checkpoint": checkpoints[0] if checkpoints else None, "filters": filters, "after_seq": after_seq,
    })


@router.get("/registry")
def registry_page(request: Request, viewer: CurrentViewer, session: SessionDep) -> Response:
    """List registered models with their versions, aliases and artifact sizes."""
    models = registry.list_models(session=session, limit=200)
    rows = [(model, registry.list_versions(session=session, model_name=model.name)) for model in models]
    return render(request, "registry.html", {"viewer": viewer, "title": "Registry", "models": rows})


def install_ui(app: FastAPI, settings: Settings) -> None:
    """Mount the web UI under /ui: pages, vendored static assets, sessions and HTML error pages."""
    app.state.ui_templates = build_templates()
    app.state.ui_sessions = None  # built on first use: the audit key is loaded (and checked) when the app starts
    app.state.html_error_renderer = render_error
    app.mount("/ui/static", StaticFiles(directory=UI_DIR / "static"), name="ui-static")
    app.include_router(router)
    app.include_router(approvals_router)
    app.include_router(fleet_router)
    app.include_router(experiments_router)
    app.include_router(drift_router)
    app.include_router(prompts_router)
    app.include_router(chat_router)
    app.include_router(governance_router)

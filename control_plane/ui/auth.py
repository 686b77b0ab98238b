"""Who is looking at a page, and whether a form really came from one of our pages (CSRF)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.deps import get_database
from control_plane.errors import EdgeloopError, Forbidden, Unauthenticated
from control_plane.ui.session import CSRF_FIELD, CSRF_HEADER, SessionCodec, UiSession, csrf_matches


class LoginRequired(EdgeloopError):
    """The page needs a signed-in user; the UI answers with a redirect to the login page."""

    status_code = 303
    code = "login_required"


def get_codec(request: Request) -> SessionCodec:
    """Return this app's session codec, keyed from the audit key the app loaded at start."""
    state = request.app.state
    if state.ui_sessions is None:
        settings = state.settings
        state.ui_sessions = SessionCodec(state.audit_signer, settings.ui_session_seconds,
                                         secure=settings.base_url.startswith("https://"))
    codec: SessionCodec = state.ui_sessions
    return codec


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of one page view: who they are and the CSRF token their forms must carry."""

    principal: Principal
    csrf: str

    def can(self, scope: Scope) -> bool:
        """Return whether the user's role grants ``scope`` (decides which buttons a page shows)."""
        return scope in self.principal.scopes

    def require(self, scope: Scope) -> None:
        """Refuse a form post the user's role does not allow, whatever the page showed."""
        if not self.can(scope):
            raise Forbidden(f"role {self.principal.role.value!r} lacks scope {scope.value!r}")


def current_viewer(request: Request) -> Viewer:
    """Authenticate the session's token exactly as the API would; redirect to login when there is none."""
    session = get_codec(request).read(request)
    if session is None or session.token is None:
        raise LoginRequired("sign in first")
    database = get_database(request)
    try:
        with database.engine.connect() as connection:
            principal = auth_service.authenticate(connection=connection, bearer=session.token)
    except Unauthenticated as exc:
        raise LoginRequired(exc.message) from None
    if Scope.READ not in principal.scopes:
        raise Forbidden(f"role {principal.role.value!r} cannot use the web UI")
    return Viewer(principal, session.csrf)


async def checked_form(request: Request, viewer: Annotated[Viewer, Depends(current_viewer)]) -> dict[str, str]:
    """Return the posted form of a signed-in user after checking its CSRF token (field or htmx header)."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    presented = fields.pop(CSRF_FIELD, None) or request.headers.get(CSRF_HEADER)
    if not csrf_matches(UiSession(csrf=viewer.csrf), presented):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")
    return fields


CurrentViewer = Annotated[Viewer, Depends(current_viewer)]
CheckedForm = Annotated[dict[str, str], Depends(checked_form)]

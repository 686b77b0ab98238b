"""Templates, security headers and the HTML error page of the web UI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import RedirectResponse, Response

from control_plane.errors import EdgeloopError

UI_DIR = Path(__file__).parent
# No inline script or style anywhere: htmx is told (by a meta tag) not to inject its indicator CSS, and eval is off.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _ago(value: datetime | None) -> str:
    """Render a timestamp as a short relative age ("3m ago")."""
    if value is None:
        return "never"
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _bytes(value: int | None) -> str:
    """Render a byte count with a binary unit."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"


def build_templates() -> Jinja2Templates:
    """Return the UI's templates: autoescape on for every file, undefined variables are errors."""
    environment = Environment(loader=FileSystemLoader(UI_DIR / "templates"), autoescape=select_autoescape(default=True),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["ago"] = _ago
    environment.filters["bytes"] = _bytes
    return Jinja2Templates(env=environment)


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """Render ``template`` with the UI's security headers."""
    templates: Jinja2Templates = request.app.state.ui_templates
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(url: str) -> Response:
    """Answer a form post with 303 See Other, so a reload never re-posts it."""
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def render_error(request: Request, exc: EdgeloopError) -> Response:
    """Render a domain error as a page (login redirect for a missing or dead session)."""
    from control_plane.ui.auth import LoginRequired

    if isinstance(exc, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"/ui/login?next={quote(target, safe='')}")
    context = {"viewer": None, "title": "Error", "status": exc.status_code, "code": exc.code, "message": exc.message}
    return render(request, "error.html", context, status_code=exc.status_code)

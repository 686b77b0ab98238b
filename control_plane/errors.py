"""One domain error hierarchy, turned into JSON responses by one handler."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field


class EdgeloopError(Exception):
    """Base of every error a service may raise; carries its HTTP status."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(EdgeloopError):
    """The named resource does not exist."""

    status_code = 404
    code = "not_found"


class Conflict(EdgeloopError):
    """The change collides with existing state (duplicate, stale precondition)."""

    status_code = 409
    code = "conflict"


class Invalid(EdgeloopError):
    """The input is well-formed JSON but semantically wrong."""

    status_code = 422
    code = "invalid"


class Unauthenticated(EdgeloopError):
    """No valid credentials were presented."""

    status_code = 401
    code = "unauthenticated"


class Forbidden(EdgeloopError):
    """The caller is authenticated but lacks the required role or scope."""

    status_code = 403
    code = "forbidden"


class PayloadTooLarge(EdgeloopError):
    """The request body exceeds a configured limit."""

    status_code = 413
    code = "payload_too_large"


class RangeNotSatisfiable(EdgeloopError):
    """The requested byte range lies outside the resource."""

    status_code = 416
    code = "range_not_satisfiable"


class ServiceUnavailable(EdgeloopError):
    """A dependency (broker, vector store, LLM) is not reachable."""

    status_code = 503
    code = "unavailable"


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message for humans and structured details."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The JSON body of every error response."""

    error: ErrorDetail


_STATUS_DESCRIPTIONS = {
    400: "The request could not be parsed (for example a body that is not JSON)",
    401: "Missing, malformed, revoked or expired bearer token",
    403: "The token's role lacks the required scope",
    404: "The named resource does not exist",
    409: "The change conflicts with existing state",
    413: "The request body exceeds a configured limit",
    416: "The requested byte range lies outside the resource",
    422: "The request is invalid",
    503: "A dependency is not reachable",
}


# The largest integer SQLite and PostgreSQL BIGINT columns hold; query parameters compared against them must stay
# within it, or the driver raises OverflowError (a 500) instead of the API answering 422.
MAX_DB_INT = 2**63 - 1


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """Document the shared error body for ``status_codes``, for a router's or route's ``responses=``."""
    # Errors are JSON even on routes whose success is not (e.g. a text/plain ACL file), so say so explicitly;
    # FastAPI would otherwise document them under the route's own media type.
    return {code: {"model": ErrorBody, "description": _STATUS_DESCRIPTIONS[code], "content": {"application/json": {}}}
            for code in status_codes}


# What any authenticated API route may answer besides success; clients generated from the schema need these.
# 413: control_plane.limits refuses a body past its route's limit before the route sees it.
API_ERROR_RESPONSES = error_responses(400, 401, 403, 404, 409, 413, 422)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the JSON error body every error response shares."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


async def _handle_edgeloop_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EdgeloopError)
    # The web UI registers an HTML renderer: its pages answer errors as pages, the API always as JSON.
    render_html = getattr(request.app.state, "html_error_renderer", None)
    if render_html is not None and request.url.path.startswith("/ui/"):
        page: Response = render_html(request, exc)
        return page
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every EdgeloopError to its status code and JSON body."""
    app.add_exception_handler(EdgeloopError, _handle_edgeloop_error)
    install_validation_handlers(app)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    from fastapi.exceptions import RequestValidationError

    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(part) for part in err.get("loc", ())), "message": err.get("msg", ""),
         "type": err.get("type", "")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return JSONResponse(error_body("invalid", f"invalid request: {summary}", {"errors": errors}), 422)


async def _handle_http_exception(_: Request, exc: Exception) -> JSONResponse:
    # Raised by the framework itself (unparseable body, unknown route, wrong method): same body as ours.
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
            422: "invalid"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def _handle_integrity_error(_: Request, exc: Exception) -> JSONResponse:
    # A unique-constraint race that slipped past a service's own check is still a conflict, not a 500.
    return JSONResponse(error_body("conflict", "the change conflicts with existing data"), 409)


def install_validation_handlers(app: FastAPI) -> None:
    """Give request-validation and integrity errors the same JSON shape as domain errors."""
    from fastapi.exceptions import RequestValidationError
    from sqlalchemy.exc import IntegrityError
    from starlette.exceptions import HTTPException

    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(IntegrityError, _handle_integrity_error)

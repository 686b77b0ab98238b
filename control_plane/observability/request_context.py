"""A pure ASGI middleware that gives every request an id, times it per route template and logs one line for it."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any

from fastapi import routing
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from control_plane.observability.http_metrics import HttpMetrics

REQUEST_ID_HEADER = b"x-request-id"
# Bounded and printable: a caller's id is echoed into headers and every log line, so it may carry nothing that
# splits a header or a log record, and nothing long enough to bloat them.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED_ROUTE = "unmatched"

request_id_var: ContextVar[str | None] = ContextVar("edgeloop_request_id", default=None)
access_log = logging.getLogger("control_plane.access")


def incoming_request_id(scope: Scope) -> str | None:
    """Return the caller's X-Request-ID when it is valid, else None (a fresh id is generated instead)."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _VALID_REQUEST_ID.fullmatch(value) else None
    return None


def route_templates(app: Any) -> dict[int, str]:
    """Map each route object of ``app`` to its full path template, router prefixes included."""
    # Routers are included lazily, so the matched route object knows only its own path ("/models/{name}"); the
    # effective contexts carry the prefixed one ("/api/v1/models/{name}").
    templates: dict[int, str] = {}
    for context in routing.iter_route_contexts(getattr(app, "routes", [])):
        if context.path:
            templates[id(context.original_route)] = context.path
    return templates


def route_template(scope: Scope, templates: dict[int, str]) -> str:
    """Return the matched route's path template (``/api/v1/models/{name}``), never the raw path."""
    # The raw path would give every model name, device id and scanner probe its own time series.
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    template = templates.get(id(route)) or getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE


def log_access(method: str, route: str, status: int, elapsed: float) -> None:
    """Emit the request's access line: the route template, never the path or query (tokens, personal data)."""
    # Built and handled directly: Logger.info() would first walk the (deep, async) stack to find its caller,
    # which cost more than the rest of the line together.
    duration_ms = round(elapsed * 1000, 3)
    record = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "%s %s %s %.1fms",
                                   (method, route, status, duration_ms), None, extra={
                                       "http_method": method, "route": route, "status": status,
                                       "duration_ms": duration_ms})
    access_log.handle(record)


class RequestIdFilter(logging.Filter):
    """Stamp every record with the current request's id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RequestObservability:
    """Take or make the request id, echo it, keep it in a contextvar; record latency, status and an access line."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, log_requests: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self._templates: dict[int, str] | None = None  # built on the first request, when every route exists

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # what the client sees when the app raises before it starts a response

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        reset = request_id_var.set(request_id)
        started = perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = perf_counter() - started
            if self._templates is None:
                self._templates = route_templates(scope.get("app"))
            route = route_template(scope, self._templates)
            self.metrics.observe(scope["method"], route, status, elapsed)
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                log_access(scope["method"], route, status, elapsed)
            request_id_var.reset(reset)

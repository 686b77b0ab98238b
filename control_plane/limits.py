"""Input refused before the application reads it: oversized and unauthenticated bodies, NUL bytes, JSON's NaN.

FastAPI reads and parses a request's whole body before it resolves any dependency, the bearer token included, so
a limit or an authentication check written as a dependency runs too late: 57 MB of JSON without a token was read,
parsed and held before its 401. ``RequestGuard`` is a pure ASGI middleware in front of the app, which

- answers 422 when the path or the query string carries a NUL character (PostgreSQL cannot store one);
- answers 413 when the declared Content-Length exceeds the route's limit, and otherwise counts the bytes of every
  ``http.request`` message, stopping the request with 413 the moment the count passes the limit;
- answers 401 to a request with a body on an authenticated /api/v1 route unless its bearer token is valid, before
  one byte of the body is read (the principal it found is handed to ``deps.Authorize``, so there is one lookup);
- answers 422 to a JSON body that holds ``NaN``/``Infinity`` (Python's parser accepts them; JSON does not), a
  number that overflows a float (``1e999``, parsed as infinity and stored as null) or an escaped NUL character,
  except on routes that validate each item themselves (telemetry quarantines per window).

Every answer uses the shared JSON error body (control_plane.errors).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.auth import service as auth_service
from control_plane.auth.schemas import Principal
from control_plane.errors import Unauthenticated, error_body
from control_plane.settings import Settings

API_PREFIX = "/api/v1/"
PRINCIPAL_SCOPE_KEY = "edgeloop.principal"
# What may be NaN, ±Infinity, a number too large for a float (1e999 parses as inf) or an escaped NUL in a JSON
# text; a body with none of these needs no second look, one with any is parsed once more to decide exactly.
_SUSPECT = re.compile(rb"NaN|Infinity|\\u0000|[eE]\+?\d{3}|\d{309}")
_SUSPECT_OVERLAP = 320  # bytes kept between chunks, so a token split across two is still seen


class BodyTooLarge(HTTPException):
    """The body passed its route's limit while being read (an HTTPException, so FastAPI does not make it a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body exceeds the {limit}-byte limit")
        self.limit = limit


class BodyNotJson(HTTPException):
    """The JSON body holds a value JSON cannot carry or the database cannot store."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=422, detail=message)


@dataclass(frozen=True)
class BodyRule:
    """A route's body limit (None: the route enforces its own) and whether its JSON is checked here."""

    max_bytes: int | None
    check_json: bool = True


@dataclass
class BodyLimits:
    """The default body limit and per-route overrides, keyed by "METHOD /path/{template}"."""

    default_bytes: int
    overrides: Mapping[str, BodyRule] = field(default_factory=dict)
    _compiled: list[tuple[str, re.Pattern[str], BodyRule]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        for key, rule in self.overrides.items():
            method, template = key.split(" ", 1)
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            self._compiled.append((method.upper(), re.compile(f"^{pattern}$"), rule))

    def rule_for(self, method: str, path: str) -> BodyRule:
        """Return the rule for a request."""
        for rule_method, pattern, rule in self._compiled:
            if rule_method == method and pattern.match(path):
                return rule
        return BodyRule(self.default_bytes)


async def _send_error(send: Send, status: int, code: str, message: str, **details: Any) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status in (401, 413):  # the unread body is still on the wire: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _has_nul(scope: Scope) -> bool:
    # scope["path"] is already percent-decoded; the query string is raw bytes, %00 included.
    return "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope.get("query_string", b""))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None


def _refuse_constant(name: str) -> Any:
    raise BodyNotJson(f"the JSON body holds {name}, which JSON does not allow; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyNotJson(f"the JSON body holds {text[:40]}, which is too large for a 64-bit float")
    return value


def _refuse_nul_strings(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BodyNotJson("the JSON body holds a NUL character (\\u0000), which cannot be stored")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_json_body(body: bytes) -> None:
    """Refuse NaN, ±Infinity and NUL characters in a JSON body; anything else is left to the route's parser."""
    try:
        parsed = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return  # not JSON (or too deep for this check): FastAPI's own parse answers with the reason
    _refuse_nul_strings(parsed)


class _BodyReader:
    """Wrap ``receive``: count body bytes against the limit and scan JSON for tokens that need a precise check."""

    def __init__(self, receive: Receive, limit: int | None, check_json: bool) -> None:
        self.receive = receive
        self.limit = limit
        self.check_json = check_json
        self.size = 0
        self.suspect = False
        self.chunks: list[bytes] = []
        self.tail = b""

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] != "http.request":
            return message
        chunk: bytes = message.get("body", b"")
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise BodyTooLarge(self.limit)
        if self.check_json:
            self.chunks.append(chunk)
            window = self.tail + chunk
            self.suspect = self.suspect or _SUSPECT.search(window) is not None
            self.tail = window[-_SUSPECT_OVERLAP:]
            if not message.get("more_body", False):
                if self.suspect:  # rare: a string mentioning NaN, say; parse once more to decide exactly
                    check_json_body(b"".join(self.chunks))
                self.chunks = []
        return message


def _requires_token(route: APIRoute) -> bool:
    from control_plane.deps import Authorize  # deps imports this module

    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Authorize):
            return True
        pending.extend(dependant.dependencies)
    return False


def authenticated_routes(routes: Iterable[Any]) -> list[tuple[frozenset[str], re.Pattern[str]]]:
    """Return (methods, path pattern) of every route that depends on deps.Authorize."""
    found = []
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path and _requires_token(route):
            found.append((frozenset(route.methods or ()), compile_path(context.path)[0]))
    return found


class RequestGuard:
    """Pure ASGI middleware: NUL in path or query, body size, authentication and JSON checks before the app."""

    def __init__(self, app: ASGIApp, limits: BodyLimits,
                 routes: Callable[[], Iterable[Any]] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.routes = routes
        self._authenticated_routes: list[tuple[frozenset[str], re.Pattern[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_nul(scope):
            await _send_error(send, 422, "invalid", "the path or query string contains a NUL character")
            return
        declared = _header(scope, b"content-length")
        if declared is not None and not declared.strip().isdigit():
            await _send_error(send, 400, "bad_request", "Content-Length is not a number")
            return
        if not ((declared is not None and int(declared) > 0) or _header(scope, b"transfer-encoding") is not None):
            await self.app(scope, receive, send)  # no body: nothing to count, and the route authenticates as usual
            return
        rule = self.limits.rule_for(scope["method"], scope["path"])
        if declared is not None and rule.max_bytes is not None and int(declared) > rule.max_bytes:
            await _send_error(send, 413, "payload_too_large",
                              f"request body exceeds the {rule.max_bytes}-byte limit", limit=rule.max_bytes)
            return
        if scope["path"].startswith(API_PREFIX) and self._requires_token(scope):
            refusal = self._authenticate(scope)
            if refusal is not None:
                await _send_error(send, 401, "unauthenticated", refusal)
                return
        is_json = (_header(scope, b"content-type") or b"application/json").split(b";")[0].strip().endswith(b"json")
        reader = _BodyReader(receive, rule.max_bytes, rule.check_json and is_json)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, reader, tracking_send)
        except (BodyTooLarge, BodyNotJson) as exc:  # raised outside FastAPI's handlers (e.g. a streaming read)
            if started:
                raise
            code = "payload_too_large" if isinstance(exc, BodyTooLarge) else "invalid"
            await _send_error(send, exc.status_code, code, exc.detail)

    def _requires_token(self, scope: Scope) -> bool:
        if self._authenticated_routes is None:  # built on first use: routes may be added after the middleware
            self._authenticated_routes = authenticated_routes(self.routes() if self.routes else scope["app"].routes)
        method, path = scope["method"], scope["path"]
        return any(method in methods and pattern.match(path) for methods, pattern in self._authenticated_routes)

    def _authenticate(self, scope: Scope) -> str | None:
        """Check the bearer token; return why it is refused, or None (the principal is left in the scope)."""
        header = (_header(scope, b"authorization") or b"").decode("latin-1")
        scheme, _, bearer = header.partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            return "missing bearer token"
        database = scope["app"].state.database
        try:
            # A pooled connection of its own, as deps.Authorize does for writes: never the request's writer session.
            with database.engine.connect() as connection:
                principal = auth_service.authenticate(connection=connection, bearer=bearer.strip())
        except Unauthenticated as exc:
            return exc.message
        scope[PRINCIPAL_SCOPE_KEY] = (bearer.strip(), principal)
        return None


def authenticated_before_body(scope: Scope, bearer: str) -> Principal | None:
    """Return the principal RequestGuard already found for this bearer token, if it checked one."""
    found = scope.get(PRINCIPAL_SCOPE_KEY)
    if found is not None and found[0] == bearer:
        principal: Principal = found[1]
        return principal
    return None


def body_limits(settings: Settings) -> BodyLimits:
    """Return the body limits: the configured default, and overrides for the routes that take bulk data."""
    bulk = BodyRule(settings.max_bulk_request_bytes)
    return BodyLimits(settings.max_request_bytes, {
        # The artifact upload streams to disk under its own limit; its bytes are not JSON.
        "POST /api/v1/artifacts": BodyRule(settings.max_artifact_bytes, check_json=False),
        # Each window is validated (and quarantined with its reason) on its own: one bad window costs no other.
        "POST /api/v1/telemetry/windows": BodyRule(settings.max_bulk_request_bytes, check_json=False),
        "POST /api/v1/telemetry/labels": bulk,
        "POST /api/v1/drift/exact": bulk,
        "POST /api/v1/datasets": bulk,
        "POST /api/v1/eval-datasets/{name}/versions": bulk,
    })

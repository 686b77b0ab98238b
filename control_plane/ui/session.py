"""The web UI's session: a signed, expiring, HttpOnly cookie that carries the user's API token and a CSRF secret.

The cookie holds the token itself, so every page authenticates exactly as the API does: revoking or expiring the
token ends the session at once, on every replica. The signing secret is derived from the audit key (an ed25519
signature is deterministic), so replicas that share keys share sessions without another secret to distribute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from control_plane.signing import Signer

COOKIE_NAME = "edgeloop_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SALT = "edgeloop-ui-session-v1"


@dataclass(frozen=True)
class UiSession:
    """What the cookie carries: the bearer token (absent before login) and the CSRF secret."""

    csrf: str
    token: str | None = None


class SessionCodec:
    """Sign and check session cookies; sessions older than ``max_age_s`` are refused."""

    def __init__(self, signer: Signer, max_age_s: int, *, secure: bool) -> None:
        secret = hashlib.sha256(signer.sign(SESSION_SALT.encode())).digest()
        self._serializer = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
        self.max_age_s = max_age_s
        self.secure = secure

    def read(self, request: Request) -> UiSession | None:
        """Return the request's session, or None when absent, forged or expired."""
        raw = request.cookies.get(COOKIE_NAME)
        if not raw or len(raw) > 4096:
            return None
        try:
            payload: Any = self._serializer.loads(raw, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("c"), str):
            return None
        token = payload.get("t")
        return UiSession(csrf=payload["c"], token=token if isinstance(token, str) else None)

    def write(self, response: Response, session: UiSession) -> None:
        """Set the cookie: HttpOnly, SameSite=Strict, scoped to /ui, Secure behind https."""
        payload: dict[str, str] = {"c": session.csrf}
        if session.token:
            payload["t"] = session.token
        response.set_cookie(COOKIE_NAME, self._serializer.dumps(payload), max_age=self.max_age_s, path="/ui",
                            httponly=True, samesite="strict", secure=self.secure)

    @staticmethod
    def clear(response: Response) -> None:
        """Remove the cookie."""
        response.delete_cookie(COOKIE_NAME, path="/ui", httponly=True, samesite="strict")


def new_session(token: str | None = None) -> UiSession:
    """Return a session with a fresh CSRF secret (rotated at login, so a planted cookie is useless)."""
    return UiSession(csrf=secrets.token_urlsafe(32), token=token)


def csrf_matches(session: UiSession | None, presented: str | None) -> bool:
    """Return whether the presented CSRF token is this session's, compared in constant time."""
    if session is None or not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())

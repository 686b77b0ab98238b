"""Issue, resolve and revoke API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import cast

from sqlalchemy import Connection, Table, bindparam, select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.models import ApiToken
from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal, TokenCreate
from control_plane.db.base import utcnow
from control_plane.errors import NotFound, Unauthenticated

TOKEN_PREFIX = "elp"
_TOKENS = cast(Table, ApiToken.__table__)
# One indexed lookup of only the columns authentication needs, built once: no ORM entity, identity map or
# per-call statement construction on a path every request takes.
_TOKEN_BY_KEY_ID = select(
    _TOKENS.c.id, _TOKENS.c.name, _TOKENS.c.role, _TOKENS.c.secret_sha256, _TOKENS.c.device_id,
    _TOKENS.c.expires_at, _TOKENS.c.revoked_at,
).where(_TOKENS.c.key_id == bindparam("key_id"))


def _hash_secret(secret: str) -> str:
    # Secrets are 256-bit random, so a fast hash is enough; a slow KDF only protects guessable secrets.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(*, session: Session, request: TokenCreate, actor: str) -> tuple[ApiToken, str]:
    """Create a token and return it with its one-time plaintext value."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(days=request.expires_in_days) if request.expires_in_days else None
    token = ApiToken(
        name=request.name,
        role=request.role.value,
        key_id=key_id,
        secret_sha256=_hash_secret(secret),
        device_id=request.device_id,
        created_by=actor,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="token.create",
        resource=("token", token.id),
        data={"name": token.name, "role": token.role, "device_id": token.device_id},
    )
    return token, f"{TOKEN_PREFIX}_{key_id}_{secret}"


def list_tokens(*, session: Session) -> list[ApiToken]:
    """Return every token, newest first."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc())))


def revoke_token(*, session: Session, token_id: str, actor: str) -> ApiToken:
    """Revoke a token; revoking twice is a no-op."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"token {token_id!r} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor=actor, action="token.revoke", resource=("token", token.id), data={})
    return token


def authenticate(*, connection: Connection, bearer: str) -> Principal:
    """Resolve a bearer token to a principal, or raise Unauthenticated; reads the token row on every call."""
    parts = bearer.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise Unauthenticated("malformed token")
    token = connection.execute(_TOKEN_BY_KEY_ID, {"key_id": parts[1]}).first()
    if token is None or not hmac.compare_digest(token.secret_sha256, _hash_secret(parts[2])):
        raise Unauthenticated("invalid token")
    if token.revoked_at is not None:
        raise Unauthenticated("token revoked")
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise Unauthenticated("token expired")
    role = Role(token.role)
    return Principal(token.id, token.name, role, ROLE_SCOPES[role], token.device_id)


def has_admin(*, session: Session) -> bool:
    """Return whether any live admin token exists (used to bootstrap a fresh install)."""
    query = select(ApiToken.id).where(ApiToken.role == Role.ADMIN.value, ApiToken.revoked_at.is_(None))
    return session.scalar(query.limit(1)) is not None

"""Token administration and identity routes."""

from __future__ import annotations

from fastapi import APIRouter, status

from control_plane.auth import service
from control_plane.auth.schemas import TokenCreate, TokenCreated, TokenRead, WhoAmI
from control_plane.constraints import Name
from control_plane.deps import Admin, Authenticated, SessionDep

router = APIRouter(tags=["auth"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: Authenticated) -> WhoAmI:
    """Return the caller's role and scopes."""
    return WhoAmI(name=caller.name, role=caller.role, scopes=sorted(caller.scopes), device_id=caller.device_id)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_token(body: TokenCreate, session: SessionDep, caller: Admin) -> TokenCreated:
    """Create a token; the secret is returned once and never again."""
    token, plaintext = service.create_token(session=session, request=body, actor=caller.actor)
    return TokenCreated(**TokenRead.model_validate(token).model_dump(), token=plaintext)


@router.get("/tokens", response_model=list[TokenRead])
def list_tokens(session: SessionDep, _: Admin) -> list[TokenRead]:
    """List tokens (metadata only)."""
    return [TokenRead.model_validate(t) for t in service.list_tokens(session=session)]


@router.delete("/tokens/{token_id}", response_model=TokenRead)
def revoke_token(token_id: Name, session: SessionDep, caller: Admin) -> TokenRead:
    """Revoke a token."""
    return TokenRead.model_validate(service.revoke_token(session=session, token_id=token_id, actor=caller.actor))

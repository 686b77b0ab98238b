"""Token request and response bodies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.auth.roles import Role, Scope


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    token_id: str
    name: str
    role: Role
    scopes: frozenset[Scope]
    device_id: str | None = None

    @property
    def actor(self) -> str:
        """Return the audit-log actor string, e.g. ``operator:alice``."""
        return f"{self.role.value}:{self.name}"


class TokenCreate(BaseModel):
    """Ask for a new token."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.@:-]+$")
    role: Role
    device_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _device_scope(self) -> TokenCreate:
        if (self.role == Role.DEVICE) != (self.device_id is not None):
            raise ValueError("device_id is required for, and only for, the device role")
        return self


class TokenRead(BaseModel):
    """A token's metadata; never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    device_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    """A new token, with its secret shown exactly once."""

    token: str


class WhoAmI(BaseModel):
    """The caller's identity as the server sees it."""

    name: str
    role: Role
    scopes: list[Scope]
    device_id: str | None

"""Roles and the scopes each one grants; routes require scopes, never role names."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """Who a token belongs to."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"
    AGENT = "agent"
    DEVICE = "device"


class Scope(StrEnum):
    """What a route needs."""

    READ = "read"
    WRITE = "write"
    PROPOSE = "propose"
    APPROVE = "approve"
    ADMIN = "admin"
    DEVICE = "device"


# Agents read and propose but never write, approve or execute: least privilege for automation.
# Devices only get the device scope, further narrowed to their own device id by each route.
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.VIEWER: frozenset({Scope.READ}),
    Role.AGENT: frozenset({Scope.READ, Scope.PROPOSE}),
    Role.OPERATOR: frozenset({Scope.READ, Scope.WRITE, Scope.PROPOSE}),
    Role.APPROVER: frozenset({Scope.READ, Scope.WRITE, Scope.PROPOSE, Scope.APPROVE}),
    Role.ADMIN: frozenset({Scope.READ, Scope.WRITE, Scope.PROPOSE, Scope.APPROVE, Scope.ADMIN}),
    Role.DEVICE: frozenset({Scope.DEVICE}),
}

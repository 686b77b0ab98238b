"""What a role may see of the change stream: some resource types are admin-only, secret material never shows."""

from __future__ import annotations

import re
from typing import Any

from control_plane.auth.roles import Scope

# Resource types a reader needs more than the read scope for (their routes are admin-only too).
RESTRICTED_RESOURCE_TYPES: dict[str, Scope] = {"token": Scope.ADMIN, "webhook": Scope.ADMIN}
_SECRET_KEY = re.compile(r"(secret|password|passwd|private_key|api_key|authorization|bearer|credential)", re.I)
_SECRET_KEYS_EXACT = frozenset({"token", "plaintext", "signature"})
# A bearer token's shape (auth.service): never let one through, whatever key it hides under.
_TOKEN_VALUE = re.compile(r"elp_[0-9a-f]{16}_\S+")
REDACTED = "[redacted]"


def hidden_resource_types(scopes: frozenset[Scope]) -> list[str]:
    """Return the resource types these scopes may not see."""
    return [kind for kind, needed in RESTRICTED_RESOURCE_TYPES.items() if needed not in scopes]


def redact(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with secret-looking keys and token-shaped strings replaced."""
    if depth > 64:
        return REDACTED
    if isinstance(value, dict):
        return {key: REDACTED if _is_secret_key(str(key)) else redact(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, depth + 1) for item in value]
    if isinstance(value, str) and _TOKEN_VALUE.search(value):
        return _TOKEN_VALUE.sub(REDACTED, value)
    return value


def _is_secret_key(key: str) -> bool:
    return key.lower() in _SECRET_KEYS_EXACT or bool(_SECRET_KEY.search(key))

"""Canonical JSON and the chain hash: the only definitions a verifier needs."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import Enum
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable in an audit entry: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Serialise with sorted keys and no whitespace, so the same content always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default,
                      allow_nan=False)


def entry_hash(prev_hash: str, body: str) -> str:
    """Return sha256(prev_hash || "\\n" || body) as hex."""
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def checkpoint_message(seq: int, head_hash: str) -> bytes:
    """Return the bytes a checkpoint signature covers."""
    return f"edgeloop.audit.checkpoint/v1\n{seq}\n{head_hash}".encode()

"""Audit API bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEntryRead(BaseModel):
    """One entry as recorded, with its chain hashes."""

    seq: int
    ts: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class CheckpointRead(BaseModel):
    """A signed checkpoint of the chain head."""

    seq: int
    head_hash: str
    key_id: str
    signature: str
    created_at: datetime


class VerifyReport(BaseModel):
    """The outcome of recomputing the whole chain.

    ``first_broken_seq`` is the first entry that is (or, for a rewrite caught only by a checkpoint, may be) wrong;
    ``broken_checkpoint_seq`` names a forged or deleted checkpoint when no entry is wrong.
    """

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None = None
    reason: str | None = None
    broken_checkpoint_seq: int | None = None
    problems: list[str] = []
    checkpoints_verified: int = 0
    external_checkpoints_verified: int = 0
    last_checkpoint_seq: int | None = None
    elapsed_ms: float = 0.0


class PublicKeyRead(BaseModel):
    """The key that signs checkpoints, for independent verification."""

    key_id: str
    public_key_b64: str

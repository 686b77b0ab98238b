"""Approval tables: proposals (the queue), device quarantines and retraining requests they produce."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, JSONType, TimestampMixin, id_column


class Proposal(TimestampMixin, Base):
    """A proposed action: what, why, who proposed it, what they assumed, who decided and what happened."""

    __tablename__ = "proposals"
    __table_args__ = (Index("ix_proposals_state_expires", "state", "expires_at"),)

    id: Mapped[str] = id_column("prop")
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(200))
    incident_id: Mapped[str | None] = mapped_column(String(40), index=True)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    expected_effect: Mapped[str] = mapped_column(Text, default="")
    risk: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[datetime]
    proposer: Mapped[str] = mapped_column(String(200))
    # Four eyes compares principal names, so another token (or role) of the same principal cannot decide.
    proposer_name: Mapped[str] = mapped_column(String(200))
    proposer_token_id: Mapped[str] = mapped_column(String(40))
    agent_run_id: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    preconditions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    executed_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    verification: Mapped[str | None] = mapped_column(String(20))
    verified_by: Mapped[str | None] = mapped_column(String(200))
    verified_at: Mapped[datetime | None]
    verification_note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None]


class DeviceQuarantine(TimestampMixin, Base):
    """A quarantined device: rollouts skip it and fleet drift leaves out its telemetry until released."""

    __tablename__ = "device_quarantines"

    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    proposal_id: Mapped[str | None] = mapped_column(String(40))
    incident_id: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))


class RetrainRequest(TimestampMixin, Base):
    """A recorded request to retrain a model on a drifted window and cohort (the closed loop picks it up)."""

    __tablename__ = "retrain_requests"

    id: Mapped[str] = id_column("rtr")
    proposal_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    incident_id: Mapped[str | None] = mapped_column(String(40), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    cohort: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(20), default="requested")
    created_by: Mapped[str] = mapped_column(String(200))

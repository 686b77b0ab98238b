"""Alert table: one row per incident; at most one unresolved alert per fingerprint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, TimestampMixin, id_column


class Alert(TimestampMixin, Base):
    """A monitor finding. `active_fingerprint` equals `fingerprint` until resolved, then NULL.

    A unique index on `active_fingerprint` makes "one open alert per fingerprint" hold on SQLite and
    PostgreSQL alike, even with two monitors racing (both engines allow many NULLs under UNIQUE).
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_state_severity", "state", "severity"),
        Index("ix_alerts_model", "model_name", "model_version"),
    )

    id: Mapped[str] = id_column("al")
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    active_fingerprint: Mapped[str | None] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(20))
    check: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    model_version_id: Mapped[str | None] = mapped_column(String(40))
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    rollout_id: Mapped[str | None] = mapped_column(String(40))
    monitor_id: Mapped[str | None] = mapped_column(String(40))
    feature: Mapped[str | None] = mapped_column(String(200))
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(Text)

"""Drift monitor configuration and the per-fingerprint hysteresis state the monitor keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, TimestampMixin, id_column


class DriftMonitor(TimestampMixin, Base):
    """Thresholds for one model version (or all versions when `model_version` is NULL), optionally one deployment."""

    __tablename__ = "drift_monitors"
    __table_args__ = (
        UniqueConstraint("model_name", "model_version", "deployment_id", name="uq_drift_monitors_scope"),
    )

    id: Mapped[str] = id_column("mon")
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[int | None] = mapped_column(Integer)
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))


class MonitorState(Base):
    """Consecutive raise/clear counts of one fingerprint, so a flapping statistic raises once."""

    __tablename__ = "drift_monitor_states"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    check: Mapped[str] = mapped_column(String(40))
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    feature: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    raise_streak: Mapped[int] = mapped_column(Integer, default=0)
    clear_streak: Mapped[int] = mapped_column(Integer, default=0)
    last_value: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime | None]

"""Training tables: jobs (one per retraining request) and the labelled feature rows they learn from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, TimestampMixin, id_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class TrainingJob(TimestampMixin, Base):
    """A retraining job: what it trains on, its state, the challenger it registered and the comparison."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_state_created", "state", "created_at"),)

    id: Mapped[str] = id_column("tj")
    # Unique: one job per request however often it is enqueued (executor retries, `edgeloop train --request`).
    retrain_request_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    incident_id: Mapped[str | None] = mapped_column(String(40), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    cohort: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    challenger_version: Mapped[int | None] = mapped_column(Integer)
    challenger_version_id: Mapped[str | None] = mapped_column(String(40))
    proposal_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    comparison: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]


class LabelledRows(Base):
    """Feature rows with their true labels, seen by a device during one stored telemetry window."""

    __tablename__ = "training_samples"
    __table_args__ = (
        UniqueConstraint("device_id", "window_seq", name="uq_training_samples_device_seq"),
        Index("ix_training_samples_model_time", "model_name", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(200))
    window_seq: Mapped[int] = mapped_column(BigInteger)
    # Copied from the telemetry window at intake: the window, not the poster, says which model and cohort.
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    device_group: Mapped[str | None] = mapped_column(String(100))
    window_start: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[str] = mapped_column(Text)  # JSON [[float, ...], ...]
    labels: Mapped[str] = mapped_column(Text)  # JSON [int, ...]
    received_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200))

"""Telemetry tables: stored windows, quarantined messages and delayed ground-truth labels."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base

BigId = BigInteger().with_variant(Integer, "sqlite")


class TelemetryWindowRow(Base):
    """One validated window; `sketch` is the sparse layout vector as compact JSON `[[index...], [count...]]`."""

    __tablename__ = "telemetry_windows"
    __table_args__ = (
        UniqueConstraint("device_id", "window_seq", name="uq_telemetry_windows_device_seq"),
        Index("ix_telemetry_windows_model_time", "model_name", "model_version", "window_start"),
        Index("ix_telemetry_windows_received", "received_at"),
        # ~2 KB rows would otherwise be pglz-compressed into TOAST on every insert (migration 0005).
        {"postgresql_with": {"toast_tuple_target": 8160}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(200))
    window_seq: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    baseline_id: Mapped[str] = mapped_column(String(64))
    # Epoch seconds (device clock, checked against ours at ingest): cheap to bucket and compare on both engines.
    window_start: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    device_group: Mapped[str | None] = mapped_column(String(100))
    rollout_id: Mapped[str | None] = mapped_column(String(40))
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    n: Mapped[int] = mapped_column(BigInteger)
    calls: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    dropped_windows: Mapped[int] = mapped_column(BigInteger, default=0)
    sketch: Mapped[str] = mapped_column(Text)


class QuarantinedMessage(Base):
    """A message the ingest refused, with a machine-readable reason and the (truncated) raw payload."""

    __tablename__ = "telemetry_quarantine"
    __table_args__ = (Index("ix_telemetry_quarantine_reason_time", "reason", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(10))
    topic: Mapped[str | None] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(200), index=True)
    window_seq: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    payload_size: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)


class GroundTruthLabel(Base):
    """Delayed ground truth for one window: a confusion list of (predicted, actual, count)."""

    __tablename__ = "telemetry_labels"
    __table_args__ = (
        UniqueConstraint("device_id", "window_seq", name="uq_telemetry_labels_device_seq"),
        Index("ix_telemetry_labels_model_time", "model_name", "model_version", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(200))
    window_seq: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[float] = mapped_column(Float)
    total: Mapped[int] = mapped_column(BigInteger)
    correct: Mapped[int] = mapped_column(BigInteger)
    confusion: Mapped[str] = mapped_column(Text)  # JSON [[predicted, actual, count], ...]
    received_at: Mapped[float] = mapped_column(Float)


class ShadowWindowRow(Base):
    """The shadow sketch of one stored window: how a staged candidate did beside the active model (no inputs)."""

    __tablename__ = "telemetry_shadow_windows"
    __table_args__ = (
        UniqueConstraint("device_id", "window_seq", name="uq_telemetry_shadow_windows_device_seq"),
        Index("ix_telemetry_shadow_windows_rollout_time", "rollout_id", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(200))
    window_seq: Mapped[int] = mapped_column(BigInteger)
    rollout_id: Mapped[str] = mapped_column(String(40))
    device_group: Mapped[str | None] = mapped_column(String(100))
    model_name: Mapped[str] = mapped_column(String(200))  # the active model the candidate is compared with
    model_version: Mapped[int] = mapped_column(Integer)
    candidate_name: Mapped[str] = mapped_column(String(200))
    candidate_version: Mapped[int] = mapped_column(Integer)
    candidate_sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str | None] = mapped_column(String(20))  # classification | regression | None (nothing scored)
    window_start: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[float] = mapped_column(Float)
    max_latency_ms: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    agree: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    dropped: Mapped[int] = mapped_column(BigInteger)
    labels: Mapped[str] = mapped_column(Text)  # JSON {label: count} of the candidate's predictions
    latency: Mapped[str] = mapped_column(Text)  # JSON counts per edge_agent.shadow.LATENCY_BUCKETS_MS (+1 overflow)
    active_latency: Mapped[str] = mapped_column(Text)  # the active model's, on the same sampled rows
    error_counts: Mapped[str | None] = mapped_column(Text)  # regression: JSON |candidate - active| histogram
    stopped: Mapped[str | None] = mapped_column(String(40))

"""Fleet tables: devices, deployments, rollouts with their per-device targets, manifests and device events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, JSONType, TimestampMixin, id_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class Device(TimestampMixin, Base):
    """One provisioned device: its desired state (what we sent) and reported state (what it said)."""

    __tablename__ = "fleet_devices"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    group_name: Mapped[str | None] = mapped_column(String(100), index=True)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    token_id: Mapped[str | None] = mapped_column(String(40))
    # The device's MQTT password as mosquitto stores it (PBKDF2-SHA512, "$7$..."); the plaintext is shown once.
    broker_password_hash: Mapped[str | None] = mapped_column(String(200))
    broker_credentials_at: Mapped[datetime | None]
    # Last manifest sequence issued; bumped under SELECT ... FOR UPDATE on this row.
    sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    desired_rollout_id: Mapped[str | None] = mapped_column(String(40))
    desired_artifact_id: Mapped[str | None] = mapped_column(String(40))
    desired_sequence: Mapped[int | None] = mapped_column(BigInteger)
    # Artifact last confirmed active on the device (what a rollback returns to).
    active_artifact_id: Mapped[str | None] = mapped_column(String(40))
    reported_model: Mapped[dict[str, Any] | None]
    reported_slot: Mapped[str | None] = mapped_column(String(10))
    reported_state: Mapped[str | None] = mapped_column(String(20))
    reported_reason: Mapped[str | None] = mapped_column(String(100))
    reported_sequence: Mapped[int | None] = mapped_column(BigInteger)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))


class Deployment(TimestampMixin, Base):
    """The intent: ship this artifact of a model version to the devices a selector matches."""

    __tablename__ = "fleet_deployments"

    id: Mapped[str] = id_column("dep")
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), index=True)
    selector: Mapped[dict[str, Any]] = mapped_column(default=dict)
    strategy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))


class Rollout(TimestampMixin, Base):
    """The execution of a deployment (or of a rollback of it) in waves with health gates."""

    __tablename__ = "fleet_rollouts"

    id: Mapped[str] = id_column("ro")
    deployment_id: Mapped[str] = mapped_column(ForeignKey("fleet_deployments.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="deploy")
    rollback_of: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20), index=True)
    # Cumulative device counts after each wave, e.g. [1, 10, 50, 100] of 100 devices.
    wave_plan: Mapped[list[int]] = mapped_column(JSONType, default=list)
    current_wave: Mapped[int] = mapped_column(Integer, default=-1)
    wave_started_at: Mapped[datetime | None]
    failure_threshold: Mapped[float] = mapped_column(Float, default=0.1)
    min_finished: Mapped[int] = mapped_column(Integer, default=1)
    wave_timeout_s: Mapped[float] = mapped_column(Float, default=600.0)
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RolloutTarget(Base):
    """One device of a rollout: its wave, the manifest sequence it got and how it ended."""

    __tablename__ = "fleet_rollout_targets"
    __table_args__ = (Index("ix_fleet_rollout_targets_state", "rollout_id", "state"),)

    rollout_id: Mapped[str] = mapped_column(ForeignKey("fleet_rollouts.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("fleet_devices.id"), primary_key=True, index=True)
    wave: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    artifact_id: Mapped[str] = mapped_column(String(40))
    previous_artifact_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20), default="pending")
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(100))
    issued_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Manifest(TimestampMixin, Base):
    """A signed manifest envelope for one device; published (retained) by the MQTT bridge."""

    __tablename__ = "fleet_manifests"
    __table_args__ = (UniqueConstraint("device_id", "sequence", name="uq_fleet_manifests_device_sequence"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("fleet_devices.id"), index=True)
    rollout_id: Mapped[str | None] = mapped_column(String(40), index=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    artifact_sha256: Mapped[str] = mapped_column(String(64), index=True)
    envelope: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
    published_at: Mapped[datetime | None] = mapped_column(index=True)


class DeviceEvent(Base):
    """A status or presence message as received; malformed ones are kept with the reason."""

    __tablename__ = "fleet_device_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    device_id: Mapped[str | None] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str | None] = mapped_column(String(20))
    rollout_id: Mapped[str | None] = mapped_column(String(40))
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    accepted: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime]


class Cutover(TimestampMixin, Base):
    """One signed blue-green cut-over command of a rollout; published (retained) on its topic by the bridge."""

    __tablename__ = "fleet_cutovers"
    __table_args__ = (UniqueConstraint("rollout_id", "sequence", name="uq_fleet_cutovers_rollout_sequence"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(ForeignKey("fleet_rollouts.id"), index=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    direction: Mapped[str] = mapped_column(String(10))  # "new" (cut over) or "old" (switch back)
    target_sha256: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime | None]
    envelope: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    published_at: Mapped[datetime | None] = mapped_column(index=True)

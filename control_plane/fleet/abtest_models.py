"""A/B experiment tables: the experiment (design, decision) and which arm each device was hashed into."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, TimestampMixin, id_column


class Experiment(TimestampMixin, Base):
    """An A/B test run as one rollout whose targets get their arm's artifact; decided once, at the horizon."""

    __tablename__ = "fleet_experiments"

    id: Mapped[str] = id_column("exp")
    rollout_id: Mapped[str] = mapped_column(ForeignKey("fleet_rollouts.id"), unique=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("fleet_deployments.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    selector: Mapped[dict[str, Any]] = mapped_column(default=dict)
    design: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # running -> decided (a winner, proposed for promotion) | inconclusive (horizon reached, no significant
    # difference) | stopped (its rollout was aborted, failed or rolled back first); decided -> promoted once the
    # approved promotion rollout exists.
    state: Mapped[str] = mapped_column(String(20), index=True)
    winner_arm: Mapped[int | None] = mapped_column(Integer)
    winner_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None]
    proposal_id: Mapped[str | None] = mapped_column(String(40))
    promotion_rollout_id: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]


class ExperimentAssignment(Base):
    """One device's arm, from sha256(experiment id + device id); recorded so the report never re-hashes."""

    __tablename__ = "fleet_experiment_assignments"

    experiment_id: Mapped[str] = mapped_column(ForeignKey("fleet_experiments.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("fleet_devices.id"), primary_key=True, index=True)
    arm: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    artifact_id: Mapped[str] = mapped_column(String(40))
    bucket: Mapped[float] = mapped_column(Float)

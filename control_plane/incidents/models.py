"""Incident tables: the incident, its member alerts, its typed timeline and the correlation rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, JSONType, TimestampMixin, id_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class Incident(TimestampMixin, Base):
    """A group of related alerts and everything done about them."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_key_last", "correlation_key", "last_alert_at"),)

    id: Mapped[str] = id_column("inc")
    title: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)
    severity: Mapped[str] = mapped_column(String(20))
    # sha256 of the rule's key values: alerts with the same key correlate (see docs/incidents.md).
    correlation_key: Mapped[str] = mapped_column(String(64))
    key_values: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_name: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[int | None] = mapped_column(Integer)
    deployment_id: Mapped[str | None] = mapped_column(String(40))
    first_alert_at: Mapped[datetime | None]
    last_alert_at: Mapped[datetime | None]
    alert_count: Mapped[int] = mapped_column(Integer, default=0)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    dismissed_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]


class IncidentAlert(TimestampMixin, Base):
    """Membership: an alert belongs to at most one incident."""

    __tablename__ = "incident_alerts"

    alert_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)


class IncidentTimelineEntry(TimestampMixin, Base):
    """One typed entry (alert joined, triage note, RCA report, proposal, decision, ...) with its author."""

    __tablename__ = "incident_timeline"
    __table_args__ = (Index("ix_incident_timeline_incident", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(30))
    author: Mapped[str] = mapped_column(String(200))
    agent_run_id: Mapped[str | None] = mapped_column(String(40))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class CorrelationRuleRow(Base):
    """The single correlation rule (id 1): data, not code branches; absent means the documented default."""

    __tablename__ = "incident_correlation_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    keys: Mapped[list[str]] = mapped_column(JSONType, default=list)
    window_seconds: Mapped[float] = mapped_column(Float)
    cooldown_seconds: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime]

"""Webhook subscriptions and their per-event delivery state (events themselves are audit entries)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, JSONType, TimestampMixin, id_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class WebhookSubscription(TimestampMixin, Base):
    """Where to POST which audit events, and how far the log has been scanned for it."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = id_column("whk")
    url: Mapped[str] = mapped_column(Text)
    # Kept in clear: the server signs with it. Shown once at creation, never in reads, audit or events.
    secret: Mapped[str] = mapped_column(String(100))
    resource_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    actions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]


class WebhookDelivery(TimestampMixin, Base):
    """One event for one subscription: pending (with its next attempt), delivered or dead."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_seq", name="uq_webhook_deliveries_subscription_event"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(40), index=True)
    event_seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]

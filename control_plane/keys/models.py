"""The signing-key table: one row per key generation and purpose (manifest, audit)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, UTCDateTime, utcnow


class SigningKey(Base):
    """A public key, its private half encrypted at rest (or absent: kept in a file), and its rotation document."""

    __tablename__ = "signing_keys"
    # Two replicas creating the first key (or rotating) at once collide here; the loser re-reads.
    __table_args__ = (UniqueConstraint("purpose", "generation", name="uq_signing_keys_purpose_generation"),)

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), nullable=False)
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), nullable=False)
    # base64(nonce || AES-256-GCM ciphertext) under EDGELOOP_KEY_ENCRYPTION_KEY; None when the key lives in a file.
    private_key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The envelope (signed by the previous generation) that introduces this key to devices; None for the first.
    rotation_document: Mapped[str | None] = mapped_column(Text, nullable=True)
    retire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

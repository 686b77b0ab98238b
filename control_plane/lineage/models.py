"""One edge table for the whole lineage graph, so every domain can link its nodes."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.base import Base, TimestampMixin


class LineageEdge(TimestampMixin, Base):
    """A directed edge ``src --relation--> dst`` (data flows from src to dst)."""

    __tablename__ = "lineage_edges"
    __table_args__ = (
        UniqueConstraint("src_kind", "src_id", "dst_kind", "dst_id", "relation", name="uq_lineage_edge"),
        Index("ix_lineage_src", "src_kind", "src_id"),
        Index("ix_lineage_dst", "dst_kind", "dst_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    src_kind: Mapped[str] = mapped_column(String(30))
    src_id: Mapped[str] = mapped_column(String(200))
    dst_kind: Mapped[str] = mapped_column(String(30))
    dst_id: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str] = mapped_column(String(40))

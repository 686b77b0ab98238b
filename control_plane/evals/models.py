"""Eval tables: datasets with immutable content-hashed versions, runs and their per-sample results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from control_plane.db.base import Base, JSONType, TimestampMixin, id_column


class EvalDataset(TimestampMixin, Base):
    """A named eval dataset; its content lives in numbered versions."""

    __tablename__ = "eval_datasets"

    id: Mapped[str] = id_column("eds")
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))

    versions: Mapped[list[EvalDatasetVersion]] = relationship(
        back_populates="dataset", order_by="EvalDatasetVersion.version"
    )


class EvalDatasetVersion(TimestampMixin, Base):
    """Immutable samples of one dataset version, identified by their content hash."""

    __tablename__ = "eval_dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_eval_dataset_versions_dataset_version"),
        UniqueConstraint("dataset_id", "content_hash", name="uq_eval_dataset_versions_dataset_content"),
    )

    id: Mapped[str] = id_column("edv")
    dataset_id: Mapped[str] = mapped_column(ForeignKey("eval_datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    collection: Mapped[str | None] = mapped_column(String(200))
    sample_count: Mapped[int] = mapped_column(Integer)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    commit_message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200))

    dataset: Mapped[EvalDataset] = relationship(back_populates="versions")


class EvalRun(TimestampMixin, Base):
    """One scored pass over a dataset version, optionally generating answers with a prompt version."""

    __tablename__ = "eval_runs"

    id: Mapped[str] = id_column("er")
    dataset_version_id: Mapped[str] = mapped_column(ForeignKey("eval_dataset_versions.id"), index=True)
    prompt_version_id: Mapped[str | None] = mapped_column(ForeignKey("prompt_versions.id"), index=True)
    scorer_tier: Mapped[str] = mapped_column(String(20))
    scorer: Mapped[str] = mapped_column(String(100))
    generator: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    passed: Mapped[bool] = mapped_column(Boolean)
    sample_count: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(200))

    dataset_version: Mapped[EvalDatasetVersion] = relationship()
    samples: Mapped[list[EvalSampleResult]] = relationship(order_by="EvalSampleResult.sample_index")


class EvalSampleResult(Base):
    """Metrics and per-claim verdicts of one sample in one run."""

    __tablename__ = "eval_sample_results"
    __table_args__ = (UniqueConstraint("run_id", "sample_index", name="uq_eval_sample_results_run_index"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id"), index=True)
    sample_index: Mapped[int] = mapped_column(Integer)
    sample_id: Mapped[str] = mapped_column(String(200))
    answer: Mapped[str] = mapped_column(Text, default="")
    contexts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    claims: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    passed: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")

"""Registry tables. Versions and artifacts are immutable once written; aliases move."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from control_plane.db.base import Base, TimestampMixin, id_column


class Dataset(TimestampMixin, Base):
    """A versioned dataset, fingerprinted, with the baseline statistics drift checks compare against."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_datasets_name_version"),)

    id: Mapped[str] = id_column("ds")
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    fingerprint: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    schema_: Mapped[dict[str, Any]] = mapped_column("schema", default=dict)
    baseline: Mapped[dict[str, Any] | None]
    created_by: Mapped[str] = mapped_column(String(200))


class TrainingRun(TimestampMixin, Base):
    """One training run: parameters, metrics and the code that produced it."""

    __tablename__ = "training_runs"

    id: Mapped[str] = id_column("run")
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    code_commit: Mapped[str | None] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(200))


class RegisteredModel(TimestampMixin, Base):
    """A named model; its versions are numbered 1, 2, 3..."""

    __tablename__ = "registered_models"

    id: Mapped[str] = id_column("rm")
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", order_by="ModelVersion.version")
    aliases: Mapped[list[ModelAlias]] = relationship(back_populates="model", order_by="ModelAlias.alias")


class ModelVersion(TimestampMixin, Base):
    """An immutable version of a registered model."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[str] = id_column("mv")
    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("training_runs.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))

    model: Mapped[RegisteredModel] = relationship(back_populates="versions")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="model_version", order_by="Artifact.created_at")


class ModelAlias(Base):
    """A movable pointer (production, staging, canary, ...) to one version."""

    __tablename__ = "model_aliases"

    model_id: Mapped[str] = mapped_column(ForeignKey("registered_models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(200))

    model: Mapped[RegisteredModel] = relationship(back_populates="aliases")
    version: Mapped[ModelVersion] = relationship()


class ArtifactBlob(TimestampMixin, Base):
    """Bytes in the content-addressed store, known by their sha256."""

    __tablename__ = "artifact_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(200))


class Artifact(TimestampMixin, Base):
    """A blob attached to a model version, with format, quantisation and I/O schema."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("model_version_id", "sha256", name="uq_artifacts_version_sha256"),)

    id: Mapped[str] = id_column("art")
    model_version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("artifact_blobs.sha256"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(20))
    quantization: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    input_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))

    model_version: Mapped[ModelVersion] = relationship(back_populates="artifacts")

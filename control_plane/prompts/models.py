"""Prompt tables. Versions are immutable once written; labels move; agent runs record what they used."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from control_plane.db.base import Base, JSONType, TimestampMixin, id_column


class Prompt(TimestampMixin, Base):
    """A named prompt (text or chat) with the eval gate its protected labels must pass."""

    __tablename__ = "prompts"

    id: Mapped[str] = id_column("pr")
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    description: Mapped[str] = mapped_column(Text, default="")
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))

    versions: Mapped[list[PromptVersion]] = relationship(back_populates="prompt", order_by="PromptVersion.version")
    labels: Mapped[list[PromptLabel]] = relationship(back_populates="prompt", order_by="PromptLabel.label")


class PromptVersion(TimestampMixin, Base):
    """An immutable version: template or chat messages, variables, model parameters, commit message."""

    __tablename__ = "prompt_versions"
    __table_args__ = (
        UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_prompt_version"),
        UniqueConstraint("prompt_id", "content_hash", name="uq_prompt_versions_prompt_content"),
    )

    id: Mapped[str] = id_column("pv")
    prompt_id: Mapped[str] = mapped_column(ForeignKey("prompts.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(Text, default="")
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    variables: Mapped[list[str]] = mapped_column(JSONType, default=list)
    model_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    commit_message: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(300), default="api")
    created_by: Mapped[str] = mapped_column(String(200))

    prompt: Mapped[Prompt] = relationship(back_populates="versions")


class PromptLabel(Base):
    """A movable pointer (production, staging, custom) to one version."""

    __tablename__ = "prompt_labels"

    prompt_id: Mapped[str] = mapped_column(ForeignKey("prompts.id"), primary_key=True)
    label: Mapped[str] = mapped_column(String(100), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("prompt_versions.id"), index=True)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(200))
    # The eval run and dataset version the gate judged when the label last moved (what the move relied on).
    eval_run_id: Mapped[str | None] = mapped_column(String(40))
    dataset_version_id: Mapped[str | None] = mapped_column(String(40))

    prompt: Mapped[Prompt] = relationship(back_populates="labels")
    version: Mapped[PromptVersion] = relationship()


class AgentRun(TimestampMixin, Base):
    """One agent invocation and the prompt versions it used."""

    __tablename__ = "agent_runs"

    id: Mapped[str] = id_column("ar")
    agent: Mapped[str] = mapped_column(String(100), index=True)
    input_summary: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(40))
    prompt_version_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(200))

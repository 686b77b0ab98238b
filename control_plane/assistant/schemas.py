"""Assistant request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGE_CHARS = 4000


class MessageCreate(BaseModel):
    """One question; empty, whitespace-only and over-long messages are refused before anything runs."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=r"\S")]

    @field_validator("text")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
            raise ValueError("the message holds control characters")
        return value


class ThreadRead(BaseModel):
    """A thread and its turns (questions and answers with their tool calls and citations)."""

    id: str
    owner: str
    created_at: datetime | None = None
    turns: list[dict[str, Any]] = Field(default_factory=list)

"""The assistant thread's state: who owns it, the turns so far and the context a follow-up refers to."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class Turn(TypedDict, total=False):
    """One question or answer as the history shows it."""

    role: str
    text: str
    intent: str
    mode: str
    tools: list[dict[str, Any]]
    citations: list[dict[str, Any]]
    prompt_version: int | None


class AssistantState(TypedDict, total=False):
    """A thread: the owner (a token's principal name), the turns, and entities the last answer was about."""

    owner: str
    created_at: str
    question: str
    turns: Annotated[list[Turn], operator.add]
    context: dict[str, Any]

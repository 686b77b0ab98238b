"""Typed tool results: failures and mutations reach the model as data, never as exceptions or side effects."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class ToolStatus(StrEnum):
    """What a tool call came back with (HolmesGPT's four outcomes)."""

    OK = "ok"
    NO_DATA = "no_data"
    ERROR = "error"
    APPROVAL_REQUIRED = "approval_required"


class ToolResult(BaseModel):
    """One tool call's outcome: the data, or why there is none."""

    tool: str
    status: ToolStatus
    data: Any = None
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the call returned data."""
        return self.status == ToolStatus.OK


def ok(tool: str, data: Any, **params: Any) -> ToolResult:
    """Return data, or no_data when the answer is empty."""
    empty = data is None or (isinstance(data, list | dict) and not data)
    return ToolResult(tool=tool, status=ToolStatus.NO_DATA if empty else ToolStatus.OK, data=data, params=params)


def failed(tool: str, error: str, **params: Any) -> ToolResult:
    """Return an error as data (the message is the server's, never a token or a URL with credentials)."""
    return ToolResult(tool=tool, status=ToolStatus.ERROR, error=error[:500], params=params)

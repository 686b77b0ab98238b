"""The agents' tool set: read tools and propose tools, nothing that approves or executes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.control_plane_client import ControlPlaneClient
from agents.tools.propose import ProposeTools
from agents.tools.read import ReadTools
from agents.tools.results import ToolResult, ToolStatus

ALLOWED_PREFIXES = ("get_", "list_", "propose_")


class Toolset:
    """Every tool an agent may call, by name."""

    def __init__(self, client: ControlPlaneClient) -> None:
        self.read = ReadTools(client)
        self.propose = ProposeTools(client)

    def tools(self) -> dict[str, Callable[..., ToolResult]]:
        """Return name -> callable for every public tool (read and propose only)."""
        found: dict[str, Callable[..., ToolResult]] = {}
        for holder in (self.read, self.propose):
            for name in dir(holder):
                if name.startswith(ALLOWED_PREFIXES):
                    found[name] = getattr(holder, name)
        return found

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call a tool by name; an unknown tool or bad arguments is an error result, not an exception."""
        tool = self.tools().get(name)
        if tool is None:
            return ToolResult(tool=name[:100], status=ToolStatus.ERROR, error="no such tool")
        try:
            return tool(**arguments)
        except TypeError as exc:
            return ToolResult(tool=name, status=ToolStatus.ERROR, error=f"bad arguments: {exc}"[:500])


__all__ = ["ALLOWED_PREFIXES", "ProposeTools", "ReadTools", "ToolResult", "ToolStatus", "Toolset"]

"""The assistant's tool box: the agents' read and propose tools plus a few reads, each call streamed as events."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import httpx

from agents.control_plane_client import ControlPlaneClient, ControlPlaneError
from agents.tools.propose import ProposeTools
from agents.tools.read import ReadTools
from agents.tools.results import ToolResult, ToolStatus, failed, ok
from control_plane.approvals.schemas import ProposalState

Emit = Callable[[str, dict[str, Any]], None]
MAX_RESULT_CHARS = 64_000  # a tool_end event carries the data the answer's numbers come from


class AssistantReads(ReadTools):
    """The agents' read tools and the few reads the assistant's questions also need (all GETs)."""

    def list_models(self) -> ToolResult:
        """List registered models."""
        return self._get("list_models", "/models", {})

    def get_rollout(self, rollout_id: str) -> ToolResult:
        """Return one rollout with its progress."""
        return self._get("get_rollout", f"/fleet/rollouts/{rollout_id}", {})

    def get_prompt(self, prompt: str) -> ToolResult:
        """Return a prompt with its labels (production, staging, ...)."""
        return self._get("get_prompt", f"/prompts/{prompt}", {})

    def verify_audit(self) -> ToolResult:
        """Recompute the audit chain."""
        return self._get("verify_audit", "/audit/verify", {})

    def list_pending_proposals(self) -> ToolResult:
        """List the approval queue."""
        try:
            page = self._client.list_proposals(state=[ProposalState.PENDING])
        except ControlPlaneError as exc:
            return failed("list_pending_proposals", f"{exc.status_code} {exc.code}: {exc.message}")
        except httpx.HTTPError as exc:
            return failed("list_pending_proposals", type(exc).__name__)
        return ok("list_pending_proposals", page.model_dump(mode="json").get("items", []))


class ToolBox:
    """Runs tools for one turn, emits tool_start/tool_end events and keeps the evidence for citations."""

    def __init__(self, client: ControlPlaneClient, emit: Emit, *, max_calls: int = 8) -> None:
        self.reads = AssistantReads(client)
        self.proposes = ProposeTools(client)
        self.emit = emit
        self.max_calls = max_calls
        self.calls: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def names(self) -> list[str]:
        """Return every tool the assistant may call: reads and propose_action, nothing that approves or executes."""
        reads = [n for n in dir(self.reads) if n.startswith(("get_", "list_", "verify_"))]
        return sorted([*reads, "propose_action"])

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one tool by name; unknown tools, bad arguments and calls over the budget come back as errors."""
        call_id = f"call-{next(self._ids)}"
        self.emit("tool_start", {"id": call_id, "tool": name[:100], "arguments": _safe(arguments)})
        result = self._run(name, arguments)
        record = {"id": call_id, "tool": result.tool, "status": str(result.status), "arguments": _safe(arguments),
                  "error": result.error}
        self.calls.append(record)
        self.emit("tool_end", {**record, "result": _clip(result)})
        return result

    def _run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        if len(self.calls) >= self.max_calls:
            return ToolResult(tool=name[:100], status=ToolStatus.ERROR, error="tool-call budget for this turn spent")
        if name == "propose_action":
            proposal = arguments.get("proposal")
            if not isinstance(proposal, dict):
                return ToolResult(tool=name, status=ToolStatus.ERROR, error="give the proposal as an object")
            return self.proposes.propose_action(proposal)
        if name not in self.names():
            return ToolResult(tool=name[:100], status=ToolStatus.ERROR, error="no such tool")
        try:
            result: ToolResult = getattr(self.reads, name)(**arguments)
            return result
        except (TypeError, ValueError) as exc:
            return ToolResult(tool=name, status=ToolStatus.ERROR, error=f"bad arguments: {exc}"[:500])


def _safe(arguments: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(arguments, default=str)
    return arguments if len(text) <= 2_000 else {"truncated": text[:2_000]}


def _clip(result: ToolResult) -> dict[str, Any]:
    dumped = result.model_dump(mode="json")
    text = json.dumps(dumped.get("data"), default=str)
    if len(text) > MAX_RESULT_CHARS:
        dumped["data"] = {"truncated": True, "chars": len(text)}
    return dumped

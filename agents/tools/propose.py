"""Propose tools: the only writes an agent makes; each ends in the approval queue, never in execution."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from agents.control_plane_client import ControlPlaneClient, ControlPlaneError
from agents.tools.results import ToolResult, ToolStatus, failed


class ProposeTools:
    """Create a proposal (idempotent by key); the result says approval is required."""

    def __init__(self, client: ControlPlaneClient) -> None:
        self._client = client

    def propose_action(self, proposal: dict[str, Any]) -> ToolResult:
        """Queue an action for a human approver; the same idempotency key returns the same proposal."""
        from control_plane.approvals.schemas import ProposalCreate

        try:
            request = ProposalCreate.model_validate(proposal)
        except ValidationError as exc:
            return failed("propose_action", f"invalid proposal: {exc.error_count()} error(s): "
                          + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]))
        try:
            created = self._client.propose(request)
        except ControlPlaneError as exc:
            return failed("propose_action", f"{exc.status_code} {exc.code}: {exc.message}")
        except httpx.HTTPError as exc:
            return failed("propose_action", type(exc).__name__)
        except ValidationError:
            return failed("propose_action", "the control plane's answer did not match the proposal schema")
        return ToolResult(tool="propose_action", status=ToolStatus.APPROVAL_REQUIRED,
                          data=created.model_dump(mode="json"))

"""The tool set can read and propose, never approve or execute: checked by name and by every request it sends."""

from __future__ import annotations

import inspect
import json
from typing import Any

import httpx

from agents.control_plane_client import ControlPlaneClient
from agents.tools import ALLOWED_PREFIXES, Toolset
from agents.tools.results import ToolStatus

MUTATING_PATHS = ("/approve", "/reject", "/verification", "/rollback", "/pause", "/resume", "/abort",
                  "/state", "/labels", "/token", "/deployments")


def _recording_toolset(log: list[httpx.Request], status: int = 200) -> Toolset:
    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        if request.url.path.endswith("/proposals") and request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(201, json=_proposal(body))
        return httpx.Response(status, json=[] if status == 200 else {"error": {"code": "x", "message": "no"}})

    return Toolset(ControlPlaneClient("http://cp", "tok", transport=httpx.MockTransport(handler)))


def _proposal(body: dict[str, Any]) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    return {"id": "prop_x", "kind": body["action"]["kind"], "params": body["action"], "target_type": "device",
            "target_id": "d3", "incident_id": None, "evidence": [], "expected_effect": body["expected_effect"],
            "risk": "low", "expires_at": now, "proposer": "agent:x", "agent_run_id": None,
            "idempotency_key": "k" * 8, "preconditions": {}, "state": "pending", "decided_by": None,
            "decided_at": None, "decision_reason": None, "attempts": 0, "claimed_at": None, "executed_at": None,
            "result": None, "error": None, "verification": None, "verified_by": None, "verified_at": None,
            "verification_note": None, "created_at": now, "updated_at": None}


def _sample_arguments(tool: object) -> dict[str, object]:
    arguments: dict[str, object] = {}
    for name, parameter in inspect.signature(tool).parameters.items():  # type: ignore[arg-type]
        if parameter.default is not inspect.Parameter.empty:
            continue
        arguments[name] = 1 if name == "version" else {} if name == "proposal" else "x"
    return arguments


def test_every_tool_reads_or_proposes_and_nothing_else() -> None:
    log: list[httpx.Request] = []
    toolset = _recording_toolset(log)
    tools = toolset.tools()
    assert tools and all(name.startswith(ALLOWED_PREFIXES) for name in tools)
    assert not {n for n in tools if any(w in n for w in ("approve", "reject", "execute", "rollback", "verify"))}
    for name, tool in tools.items():
        result = tool(**_sample_arguments(tool))
        assert result.status in set(ToolStatus), name
    writes = [r for r in log if r.method != "GET"]
    assert all(r.url.path == "/api/v1/proposals" and r.method == "POST" for r in writes)
    assert not [r for r in log if r.url.path.endswith(MUTATING_PATHS)]


def test_unknown_tools_and_bad_arguments_are_errors_as_data() -> None:
    toolset = _recording_toolset([])
    assert toolset.call("approve_proposal", {"proposal_id": "p"}).status == ToolStatus.ERROR
    assert toolset.call("_client", {}).status == ToolStatus.ERROR
    assert toolset.call("get_alert", {"nope": 1}).status == ToolStatus.ERROR
    invalid = toolset.call("propose_action", {"proposal": {"action": {"kind": "fleet.wipe"}}})
    assert invalid.status == ToolStatus.ERROR and "invalid proposal" in (invalid.error or "")


def test_server_errors_come_back_as_results() -> None:
    toolset = _recording_toolset([], status=500)
    result = toolset.call("list_rollouts", {})
    assert result.status == ToolStatus.ERROR and "500" in (result.error or "")
    assert "tok" not in result.model_dump_json()


def test_a_proposal_is_approval_required() -> None:
    log: list[httpx.Request] = []
    result = _recording_toolset(log).call("propose_action", {"proposal": {
        "action": {"kind": "device.quarantine", "device_id": "d3"}, "expected_effect": "fewer errors"}})
    assert result.status == ToolStatus.APPROVAL_REQUIRED and result.data["state"] == "pending"


def test_a_malformed_server_answer_is_an_error_result() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"id": "prop_x"})

    toolset = Toolset(ControlPlaneClient("http://cp", "tok", transport=httpx.MockTransport(handler)))
    result = toolset.call("propose_action", {"proposal": {
        "action": {"kind": "device.quarantine", "device_id": "d3"}, "expected_effect": "fewer errors"}})
    assert result.status == ToolStatus.ERROR

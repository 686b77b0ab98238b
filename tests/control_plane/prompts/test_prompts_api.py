"""Prompt registry over HTTP: immutable versions, diff, strict render, labels, the eval gate, agent runs."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from control_plane.auth.roles import Role
from tests.conftest import TokenFactory

API = "/api/v1"
SUPPORTED = {"question": "Which port does the broker listen on?", "contexts": ["The broker listens on port 1883."],
             "answer": "The broker listens on port 1883."}
INVENTED = {"question": "Who runs the broker?", "contexts": ["Alice runs the broker."],
            "answer": "Bob runs the broker on Mars since 2019."}


def _actions(client: TestClient, headers: dict[str, str]) -> list[str]:
    return [e["action"] for e in client.get(f"{API}/audit/entries", params={"limit": 1000}, headers=headers).json()]


def _version(client: TestClient, headers: dict[str, str], name: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/prompts/{name}/versions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_versions_are_immutable_diffable_and_render_strictly(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    assert client.post(f"{API}/prompts", json={"name": "greet"}, headers=h).status_code == 201
    v1 = _version(client, h, "greet", template="Hello {{ name }}.\n", commit_message="first",
                  model_params={"model": "m1", "temperature": 0.2, "tools": ["search"]})
    assert v1["version"] == 1 and v1["variables"] == ["name"] and v1["model_params"]["tools"] == ["search"]
    same = client.post(f"{API}/prompts/greet/versions", json={"template": "Hello {{ name }}.\n"
                                                                          , "commit_message": "again",
                                                               "model_params": {"model": "m1", "temperature": 0.2,
                                                                                "tools": ["search"]}}, headers=h)
    assert same.status_code == 409 and same.json()["error"]["details"]["version"] == 1
    v2 = _version(client, h, "greet", template="Hi {{ name }}, from {{ team }}.\n", commit_message="second")
    assert v2["version"] == 2 and v2["variables"] == ["name", "team"] and v2["content_hash"] != v1["content_hash"]

    diff = client.get(f"{API}/prompts/greet/diff", params={"from": "1", "to": "latest"}, headers=h).json()
    assert diff["changed"] and "-Hello {{ name }}." in diff["diff"]
    assert "+Hi {{ name }}, from {{ team }}." in diff["diff"]
    assert '"model": "m1"' in diff["diff"]  # parameter changes show up in the diff too

    variables = {"name": "Ada", "team": "ops"}
    rendered = client.post(f"{API}/prompts/greet/render", json={"ref": "2", "variables": variables}, headers=h)
    assert rendered.json()["text"] == "Hi Ada, from ops.\n" and rendered.json()["version_id"] == v2["id"]
    missing = client.post(f"{API}/prompts/greet/render", json={"ref": "2", "variables": {"name": "Ada"}}, headers=h)
    assert missing.status_code == 422 and "team" in missing.json()["error"]["message"]
    assert missing.json()["error"]["details"]["missing"] == ["team"]
    sandboxed = _version(client, h, "greet", template="{{ name.__class__.__mro__ }}")
    escape = client.post(f"{API}/prompts/greet/render", json={"ref": str(sandboxed["version"]),
                                                              "variables": {"name": "x"}}, headers=h)
    assert escape.status_code == 422 and "unsafe" in escape.json()["error"]["message"]


def test_bad_prompt_input_is_refused_without_writes(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    client.post(f"{API}/prompts", json={"name": "chat", "kind": "chat"}, headers=h)
    before = _actions(client, h)
    cases: list[dict[str, Any]] = [
        {"template": "text for a chat prompt"},
        {"messages": [{"role": "user", "content": "{{ q }}"}], "variables": ["other"]},
        {"messages": [{"role": "user", "content": "{% if %}"}]},
        {"messages": [{"role": "user", "content": "x" * 1_000_001}]},
        {"messages": [{"role": "robot", "content": "hi"}]},
    ]
    for body in cases:
        response = client.post(f"{API}/prompts/chat/versions", json=body, headers=h)
        assert response.status_code == 422, (body.keys(), response.text[:200])
    undeclared = client.post(f"{API}/prompts/chat/versions", json=cases[1], headers=h).json()["error"]
    assert undeclared["details"]["undeclared"] == ["q"]
    raw = b'{"messages": [{"role": "user", "content": "\xff"}]}'
    not_utf8 = client.post(f"{API}/prompts/chat/versions", content=raw,
                           headers={**h, "Content-Type": "application/json"})
    assert 400 <= not_utf8.status_code < 500
    assert _actions(client, h) == before
    assert client.get(f"{API}/prompts/chat", headers=h).json()["latest_version"] is None


def test_labels_protection_and_eval_gate(client: TestClient, make_headers: TokenFactory) -> None:
    operator, approver = make_headers(Role.OPERATOR), make_headers(Role.APPROVER)
    gate = {"dataset": "golden", "minimums": {"faithfulness": 0.7}}
    nothing = client.post(f"{API}/prompts", json={"name": "qa", "kind": "chat", "gate": gate}, headers=operator)
    assert nothing.status_code == 422 and "a gate pins an existing dataset version" in nothing.text
    client.post(f"{API}/eval-datasets/golden/versions", json={"samples": [SUPPORTED]}, headers=operator)
    created = client.post(f"{API}/prompts", json={"name": "qa", "kind": "chat", "gate": gate}, headers=operator)
    assert created.json()["gate"]["dataset"] == "golden@1" and created.json()["gate"]["dataset_version_id"]
    body = {"messages": [{"role": "system", "content": "Answer from context."},
                         {"role": "user", "content": "{{ context }}\n\n{{ question }}"}]}
    good = _version(client, operator, "qa", **body)
    bad = _version(client, operator, "qa", messages=[{"role": "user", "content": "{{ question }}"}])

    assert client.put(f"{API}/prompts/qa/labels/staging", json={"version": 2}, headers=operator).status_code == 200
    forbidden = client.put(f"{API}/prompts/qa/labels/production", json={"version": 1}, headers=operator)
    assert forbidden.status_code == 403
    nowhere = client.put(f"{API}/prompts/qa/labels/production", json={"version": 99}, headers=approver)
    assert nowhere.status_code == 404 and "version 99" in nowhere.json()["error"]["message"]
    ungated = client.put(f"{API}/prompts/qa/labels/production", json={"version": 1}, headers=approver)
    assert ungated.status_code == 409
    assert "no eval run of qa@1 on dataset 'golden@1'" in ungated.json()["error"]["message"]

    # A run that scores the dataset's own answers passes its thresholds but says nothing about the prompt.
    copied = client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@1"}, headers=operator).json()
    assert copied["passed"] and copied["config"]["answers"] == {"generated": 0, "dataset": 1}
    client.post(f"{API}/eval-datasets/golden/versions", json={"samples": [SUPPORTED, INVENTED]}, headers=operator)
    failing = client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@2"}, headers=operator).json()
    assert not failing["passed"]

    not_judged = client.put(f"{API}/prompts/qa/labels/production", json={"version": 1}, headers=approver)
    assert not_judged.status_code == 409, not_judged.text
    gate_read = not_judged.json()["error"]["details"]["gate"]
    assert gate_read["eval_run_id"] == copied["id"] and "answers stored in the dataset" in gate_read["reason"]
    # qa@2 was only run on golden@2, which the gate (pinned to golden@1) does not count.
    blocked = client.put(f"{API}/prompts/qa/labels/production", json={"version": 2}, headers=approver)
    assert blocked.status_code == 409 and blocked.json()["error"]["details"]["gate"]["eval_run_id"] is None
    assert client.get(f"{API}/prompts/qa/versions/production", headers=approver).status_code == 404

    override = {"version": 2, "override_reason": "hotfix approved in INC-42, eval fixed later"}
    assert client.put(f"{API}/prompts/qa/labels/production", json=override, headers=operator).status_code == 403
    forced = client.put(f"{API}/prompts/qa/labels/production", json=override, headers=approver)
    assert forced.status_code == 200 and forced.json()["overridden"]
    entry = client.get(f"{API}/audit/entries", params={"action": "prompt_label.override"}, headers=approver).json()
    assert len(entry) == 1 and entry[0]["data"]["override_reason"] == override["override_reason"]
    assert entry[0]["data"]["gate"]["dataset"] == "golden@1" and entry[0]["data"]["to_version"] == 2
    assert client.get(f"{API}/prompts/qa/versions/production", headers=approver).json()["id"] == bad["id"]
    assert good["version"] == 1
    stray = client.put(f"{API}/prompts/qa/labels/staging", json={"version": 1, "override_reason": "not needed here"},
                       headers=approver)
    assert stray.status_code == 422
    assert client.delete(f"{API}/prompts/qa/labels/production", headers=operator).status_code == 403
    assert client.delete(f"{API}/prompts/qa/labels/staging", headers=operator).status_code == 204


def test_agent_runs_record_prompt_versions_in_lineage(client: TestClient, make_headers: TokenFactory) -> None:
    operator, agent, viewer = make_headers(Role.OPERATOR), make_headers(Role.AGENT), make_headers(Role.VIEWER)
    client.post(f"{API}/prompts", json={"name": "triage"}, headers=operator)
    version = _version(client, operator, "triage", template="Triage {{ alert }}")
    run = {"agent": "triage", "input_summary": "drift alert on cam-7", "prompt_version_ids": [version["id"]],
           "outcome": "escalated"}
    assert client.post(f"{API}/agent-runs", json=run, headers=viewer).status_code == 403
    created = client.post(f"{API}/agent-runs", json=run, headers=agent)
    assert created.status_code == 201 and created.json()["created_by"] == "agent:test-agent"
    graph = client.get(f"{API}/lineage/prompt_version/{version['id']}", params={"direction": "downstream"},
                       headers=viewer).json()
    assert {"src": f"prompt_version:{version['id']}", "dst": f"agent_run:{created.json()['id']}",
            "relation": "used_by"} in graph["edges"]
    labels = {n["id"]: n["label"] for n in graph["nodes"]}
    assert labels[version["id"]] == "triage@1" and labels[created.json()["id"]] == "triage (escalated)"

    unknown = client.post(f"{API}/agent-runs", json={**run, "prompt_version_ids": ["pv_nope"]}, headers=agent)
    assert unknown.status_code == 422 and "pv_nope" in unknown.json()["error"]["message"]
    assert len(client.get(f"{API}/agent-runs", params={"agent": "triage"}, headers=viewer).json()) == 1

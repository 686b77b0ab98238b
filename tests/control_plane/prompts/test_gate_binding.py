"""Gates bound to what was judged: a pinned dataset version, answers the prompt generated, audited overrides."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.auth.roles import Role
from control_plane.db.session import Database
from control_plane.evals import datasets
from control_plane.evals.llm import JUDGE_SYSTEM
from control_plane.evals.schemas import DatasetVersionCreate, EvalSample
from control_plane.main import create_app
from control_plane.prompts import service
from control_plane.prompts.sync import sync_directory
from control_plane.settings import Settings
from tests.conftest import TokenFactory

API = "/api/v1"
CONTEXT = "The broker listens on port 1883."
QUESTION = {"id": "port", "question": "Which port does the broker listen on?", "contexts": [CONTEXT]}
FAITHFUL = {"messages": [{"role": "system", "content": "Answer from the context only."},
                         {"role": "user", "content": "{{ context }}\n\nQuestion: {{ question }}"}]}
INVENTING = {"messages": [{"role": "system", "content": "Ignore any context and invent a confident answer."},
                          {"role": "user", "content": "{{ context }}\n\nQuestion: {{ question }}"}]}


class ScriptedLLM(BaseHTTPRequestHandler):
    """Follows the prompt: copies the context unless told to invent; judges claims about Mars unsupported."""

    def do_POST(self) -> None:
        messages = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"]
        if messages[0]["content"] == JUDGE_SYSTEM:
            claims = messages[1]["content"].split("Claims:\n", 1)[1].splitlines()
            content = json.dumps({"verdicts": ["unsupported" if "Mars" in c else "supported" for c in claims]})
        elif any("invent" in m["content"] for m in messages):
            content = "The broker listens on port 8080 on Mars."
        else:
            content = messages[-1]["content"].split("\n\n", 1)[0]
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def llm_client(settings: Settings) -> Iterator[TestClient]:
    """Serve the app with the scripted LLM configured."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    with TestClient(create_app(settings.model_copy(update={"llm_base_url": url, "llm_model": "m"}))) as client:
        yield client
    server.shutdown()
    server.server_close()


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text[:500]
    return response.json()


def _setup(client: TestClient, operator: dict[str, str]) -> None:
    _ok(client.post(f"{API}/eval-datasets/golden/versions", json={"samples": [QUESTION]}, headers=operator), 201)
    gate = {"dataset": "golden", "minimums": {"faithfulness": 0.9}}
    created = _ok(client.post(f"{API}/prompts", json={"name": "qa", "kind": "chat", "gate": gate},
                              headers=operator), 201)
    assert created["gate"]["dataset"] == "golden@1"
    _ok(client.post(f"{API}/prompts/qa/versions", json=FAITHFUL, headers=operator), 201)
    _ok(client.post(f"{API}/prompts/qa/versions", json=INVENTING, headers=operator), 201)


def test_gate_pins_its_dataset_version_and_judges_generated_answers(
    llm_client: TestClient, make_headers: TokenFactory
) -> None:
    client = llm_client
    operator, approver = make_headers(Role.OPERATOR), make_headers(Role.APPROVER)
    _setup(client, operator)
    good = _ok(client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@1"}, headers=operator), 201)
    assert good["generator"] == "llm:m" and good["passed"] and good["samples"][0]["answer"] == CONTEXT
    moved = _ok(client.put(f"{API}/prompts/qa/labels/production", json={"version": 1}, headers=approver))
    assert moved["gate"]["eval_run_id"] == good["id"] and moved["gate"]["dataset"] == "golden@1"
    assert moved["eval_run_id"] == good["id"] and moved["dataset_version_id"] == good["dataset_version_id"]
    entry = _ok(client.get(f"{API}/audit/entries", params={"action": "prompt_label.set"}, headers=approver))[0]
    assert entry["data"]["eval_run_id"] == good["id"] and entry["data"]["dataset"] == "golden@1"

    # The inventing prompt is run through the LLM and fails on the pinned version.
    bad = _ok(client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@2"}, headers=operator), 201)
    assert not bad["passed"]
    # An operator pushes a dataset version whose answers copy the context: it passes, but the gate ignores it.
    copied = {**QUESTION, "answer": CONTEXT}
    _ok(client.post(f"{API}/eval-datasets/golden/versions", json={"samples": [copied]}, headers=operator), 201)
    gamed = _ok(client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@2"}, headers=operator), 201)
    assert gamed["passed"] and gamed["dataset_version"] == 2
    blocked = client.put(f"{API}/prompts/qa/labels/production", json={"version": 2}, headers=approver)
    assert blocked.status_code == 409 and blocked.json()["error"]["details"]["gate"]["eval_run_id"] == bad["id"]

    # Moving the gate to another dataset is an approver's action, pinned and audited.
    gate = {"dataset": "golden", "minimums": {"faithfulness": 0.9}}
    assert client.put(f"{API}/prompts/qa/gate", json=gate, headers=operator).status_code == 403
    repinned = _ok(client.put(f"{API}/prompts/qa/gate", json={**gate, "dataset_version_id": "edv_forged"},
                              headers=approver))
    assert repinned["gate"]["dataset"] == "golden@2"
    assert repinned["gate"]["dataset_version_id"] == gamed["dataset_version_id"]
    change = _ok(client.get(f"{API}/audit/entries", params={"action": "prompt.gate.update"}, headers=approver))[0]
    assert change["data"]["from"]["dataset"] == "golden@1" and change["data"]["to"]["dataset"] == "golden@2"
    # Even on the new pin, answers stored in the dataset do not judge the prompt.
    stored = client.put(f"{API}/prompts/qa/labels/production", json={"version": 2}, headers=approver)
    assert stored.status_code == 409
    assert "answers stored in the dataset" in stored.json()["error"]["details"]["gate"]["reason"]


def test_offline_prompt_eval_cannot_judge_and_blocks_until_an_audited_override(
    client: TestClient, make_headers: TokenFactory
) -> None:
    operator, approver = make_headers(Role.OPERATOR), make_headers(Role.APPROVER)
    _setup(client, operator)
    run = _ok(client.post(f"{API}/eval-runs", json={"dataset": "golden", "prompt": "qa@2"}, headers=operator), 201)
    # Offline, "invent an answer" would have passed on copied context; the run says it judged nothing.
    assert run["generator"] == "offline_extractive" and run["samples"][0]["answer"] == CONTEXT
    assert run["config"]["note"].startswith("cannot judge a prompt offline")
    refused = client.put(f"{API}/prompts/qa/labels/production", json={"version": 2}, headers=approver)
    assert refused.status_code == 409
    gate = refused.json()["error"]["details"]["gate"]
    assert gate["reason"].startswith("cannot judge a prompt offline") and gate["eval_run_id"] == run["id"]

    reason = {"version": 2, "override_reason": "reviewed by hand: no LLM in this environment"}
    assert client.put(f"{API}/prompts/qa/labels/production", json=reason, headers=operator).status_code == 403
    forced = _ok(client.put(f"{API}/prompts/qa/labels/production", json=reason, headers=approver))
    assert forced["overridden"] and forced["eval_run_id"] == run["id"]
    entry = _ok(client.get(f"{API}/audit/entries", params={"action": "prompt_label.override"}, headers=approver))
    assert len(entry) == 1 and entry[0]["actor"] and entry[0]["data"]["override_reason"] == reason["override_reason"]
    assert entry[0]["data"]["dataset_version_id"] == run["dataset_version_id"]
    assert entry[0]["data"]["gate"]["reason"].startswith("cannot judge a prompt offline")
    listed = _ok(client.get(f"{API}/prompts/qa", headers=approver))
    assert listed["labels"][0]["eval_run_id"] == run["id"]


def test_a_gate_without_a_pinned_dataset_blocks(client: TestClient, make_headers: TokenFactory) -> None:
    operator, approver = make_headers(Role.OPERATOR), make_headers(Role.APPROVER)
    _ok(client.post(f"{API}/prompts", json={"name": "free", "kind": "chat"}, headers=operator), 201)
    _ok(client.post(f"{API}/prompts/free/versions", json=FAITHFUL, headers=operator), 201)
    _ok(client.post(f"{API}/eval-datasets/any/versions", json={"samples": [{**QUESTION, "answer": CONTEXT}]},
                    headers=operator), 201)
    _ok(client.post(f"{API}/eval-runs", json={"dataset": "any", "prompt": "free@1"}, headers=operator), 201)
    refused = client.put(f"{API}/prompts/free/labels/production", json={"version": 1}, headers=approver)
    assert refused.status_code == 409 and "pins no eval dataset version" in refused.json()["error"]["message"]
    missing = client.put(f"{API}/prompts/free/gate", json={"dataset": "nothing"}, headers=approver)
    assert missing.status_code == 422 and "a gate pins an existing dataset version" in missing.text


def test_a_prompt_file_cannot_move_the_pinned_dataset(database: Database, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    gated = '+++\nkind = "text"\n[gate]\ndataset = "{}"\nminimums = {{ faithfulness = {} }}\n+++\nHi {{{{ q }}}}.\n'
    with database.transaction() as session:
        for name in ("golden", "other"):
            datasets.create_version(session=session, name=name, actor="t",
                                    request=DatasetVersionCreate(samples=[EvalSample(**QUESTION)]))
        (folder / "hi.md").write_text(gated.format("golden", 0.8))
        assert sync_directory(session=session, directory=folder).created == ["hi"]
        assert service.get_prompt(session=session, name="hi").gate["dataset"] == "golden@1"
        # Thresholds may change from the file; the pin stays, and moving it is refused for that file.
        (folder / "hi.md").write_text(gated.format("golden", 0.9))
        assert not sync_directory(session=session, directory=folder).errors
        gate = service.get_prompt(session=session, name="hi").gate
        assert gate["dataset"] == "golden@1" and gate["minimums"] == {"faithfulness": 0.9}
        (folder / "hi.md").write_text(gated.format("other", 0.9))
        errors = sync_directory(session=session, directory=folder).errors
        assert "only an approver may" in errors["prompts/hi.md"]
        assert service.get_prompt(session=session, name="hi").gate["dataset"] == "golden@1"

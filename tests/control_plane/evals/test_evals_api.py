"""Eval datasets and runs over HTTP: versioning, bad input, deterministic offline scoring, compare, retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from control_plane.main import create_app
from control_plane.rag import RagStore
from control_plane.settings import Settings

API = "/api/v1"
PORT = {"id": "port", "question": "Which port does the broker listen on?",
        "contexts": ["The Mosquitto broker listens on port 1883. TLS clients use port 8883."],
        "answer": "The broker listens on port 1883.", "reference_answer": "Port 1883.", "labels": {"topic": "mqtt"}}
OWNER = {"id": "owner", "question": "Who runs the broker?", "contexts": ["Alice runs the broker for the fleet team."],
         "answer": "Bob runs the broker on Mars since 2019."}
RUNBOOKS = {
    "ota.md": "# OTA rollback\n\nTo roll a device back, run `edgeloop fleet rollback --device DEVICE`. "
              "The agent swaps to the previous A/B slot and reboots within 30 seconds.\n",
    "broker.md": "# Broker outage\n\nIf the broker is down, devices buffer telemetry for up to 24 hours. "
                 "Restart it with `systemctl restart mosquitto` and check port 1883.\n",
}


def _post(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str], status: int = 201) -> Any:
    response = client.post(f"{API}{path}", json=body, headers=headers)
    assert response.status_code == status, response.text[:500]
    return response.json()


def _eval_actions(client: TestClient, headers: dict[str, str]) -> list[str]:
    entries = client.get(f"{API}/audit/entries", params={"limit": 1000}, headers=headers).json()
    return [e["action"] for e in entries if e["action"].startswith("eval")]


def test_dataset_versions_are_immutable_and_content_hashed(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    v1 = _post(client, "/eval-datasets/golden/versions", {"samples": [PORT], "commit_message": "seed"}, h)
    same = client.post(f"{API}/eval-datasets/golden/versions", json={"samples": [PORT], "commit_message": "x"},
                       headers=h)
    assert same.status_code == 409 and same.json()["error"]["details"]["version"] == 1
    v2 = _post(client, "/eval-datasets/golden/versions", {"samples": [PORT, OWNER]}, h)
    assert (v1["version"], v2["version"], v2["sample_count"]) == (1, 2, 2) and v1["content_hash"] != v2["content_hash"]
    stored = client.get(f"{API}/eval-datasets/golden/versions/1", headers=h).json()
    assert stored["samples"][0]["labels"] == {"topic": "mqtt"} and stored["content_hash"] == v1["content_hash"]
    assert [d["latest_version"] for d in client.get(f"{API}/eval-datasets", headers=h).json()] == [2]


def test_bad_input_is_a_clear_4xx_and_writes_nothing(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    bad_datasets = {
        "question": {"samples": [PORT, {"contexts": ["c"], "answer": "a"}]},
        "empty context": {"samples": [PORT, {**OWNER, "contexts": ["  "]}]},
        "no collection": {"samples": [{"question": "q?", "answer": "a"}]},
        "answer": {"samples": [{**PORT, "answer": "x" * 1_000_000}]},
        "samples": {"samples": []},
    }
    for expected, body in bad_datasets.items():
        response = client.post(f"{API}/eval-datasets/bad/versions", json=body, headers=h)
        assert response.status_code == 422 and expected in response.json()["error"]["message"], response.text[:300]
    not_utf8 = client.post(f"{API}/eval-datasets/bad/versions", content=b'{"samples": [{"question": "\xff\xfe"}]}',
                           headers={**h, "Content-Type": "application/json"})
    assert 400 <= not_utf8.status_code < 500
    assert client.get(f"{API}/eval-datasets", headers=h).json() == [] and _eval_actions(client, h) == []

    _post(client, "/prompts", {"name": "p"}, h)
    _post(client, "/prompts/p/versions", {"template": "{{ question }} {{ tone }}"}, h)
    _post(client, "/eval-datasets/noanswers/versions", {"samples": [{"question": "Which port?",
                                                                     "contexts": PORT["contexts"]}]}, h)
    actions = _eval_actions(client, h)
    bad_runs = {
        "tone": {"dataset": "noanswers", "prompt": "p@1"},
        "no answer": {"dataset": "noanswers"},
        "EDGELOOP_LLM_BASE_URL": {"dataset": "noanswers", "prompt": "p@1", "scorer_tier": "llm"},
        "no version 7": {"dataset": "noanswers@7"},
        "no label": {"dataset": "noanswers", "prompt": "p@production"},
    }
    for expected, body in bad_runs.items():
        response = client.post(f"{API}/eval-runs", json=body, headers=h)
        assert 400 <= response.status_code < 500 and expected in response.json()["error"]["message"], response.text
    assert _eval_actions(client, h) == actions and client.get(f"{API}/eval-runs", headers=h).json() == []


def test_offline_runs_are_deterministic_with_claims_and_compare(client: TestClient,
                                                               admin_headers: dict[str, str]) -> None:
    h = admin_headers
    _post(client, "/eval-datasets/golden/versions", {"samples": [PORT, OWNER]}, h)
    loose = {"minimums": {"faithfulness": 0.4}, "maximums": {"hallucination_rate": 0.6}}
    first = _post(client, "/eval-runs", {"dataset": "golden", "thresholds": loose}, h)
    second = _post(client, "/eval-runs", {"dataset": "golden@1", "thresholds": first["thresholds"]}, h)
    assert first["scorer_tier"] == "offline" and first["scorer"] == "detector" and first["generator"] == "dataset"
    assert first["metrics"] == second["metrics"] and first["passed"]
    assert [s["claims"] for s in first["samples"]] == [s["claims"] for s in second["samples"]]
    port, owner = first["samples"]
    assert port["passed"] and port["metrics"]["answer_f1"] > 0 and port["claims"][0]["verdict"] == "supported"
    assert not owner["passed"] and owner["claims"][0]["verdict"] == "unsupported"
    assert {"Bob", "Mars", "2019"} <= set(owner["claims"][0]["unsupported_terms"])
    assert first["metrics"]["hallucination_rate"] == 0.5 and first["metrics"]["pass_rate"] == 0.5

    fixed = {**OWNER, "answer": "Alice runs the broker."}
    _post(client, "/eval-datasets/golden/versions", {"samples": [PORT, fixed]}, h)
    strict = {"minimums": {"faithfulness": 0.99}}
    third = _post(client, "/eval-runs", {"dataset": "golden", "thresholds": strict}, h)
    assert not third["passed"] and third["checks"][0]["metric"] == "faithfulness" and not third["checks"][0]["passed"]
    comparison = client.get(f"{API}/eval-runs/compare", params={"base": first["id"], "head": third["id"]},
                            headers=h).json()
    assert not comparison["same_dataset_version"] and comparison["fixes"] == 1 and comparison["regressions"] == 0
    assert comparison["flips"] == [{"sample_id": "owner", "base_passed": False, "head_passed": True,
                                    "base_faithfulness": owner["metrics"]["faithfulness"],
                                    "head_faithfulness": third["samples"][1]["metrics"]["faithfulness"]}]
    assert comparison["metrics"]["hallucination_rate"] == {"base": 0.5, "head": 0.0, "delta": -0.5}


def test_an_answer_in_a_script_the_offline_tier_cannot_read_fails_the_gate(client: TestClient,
                                                                           admin_headers: dict[str, str]) -> None:
    # An answer in Cyrillic (or a name in fullwidth letters) used to have no token the offline tier reads, so it
    # scored as "nothing to check", 1.0: a prompt could pass the gate by answering in another script.
    h = admin_headers
    cyrillic = {**OWNER, "id": "cyrillic", "answer": "Боб управляет брокером на Марсе."}  # noqa: RUF001 (Cyrillic on purpose)
    fullwidth = {**OWNER, "id": "fullwidth", "answer": "The broker is run by " + "".join(chr(ord(c) + 0xFEE0)
                                                                                         for c in "Bob") + "."}
    _post(client, "/eval-datasets/scripts/versions", {"samples": [PORT, cyrillic, fullwidth]}, h)
    run = _post(client, "/eval-runs", {"dataset": "scripts", "thresholds": {"maximums": {"hallucination_rate": 0.1}}},
                h)
    port, foreign, hidden = run["samples"]
    assert port["passed"] and not run["passed"]
    assert not foreign["passed"] and foreign["metrics"]["faithfulness"] == 0.0
    assert foreign["claims"][0]["verdict"] == "unsupported" and "Боб" in foreign["claims"][0]["unsupported_terms"]
    assert not hidden["passed"] and hidden["claims"][0]["verdict"] == "unsupported"
    assert hidden["claims"][0]["claim"] == fullwidth["answer"]  # the stored claim is the answer as sent


def test_saying_nothing_is_faithful_but_unanswered_and_a_gate_can_require_answers(
        client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    dodges = [{**OWNER, "id": f"dodge-{i}", "answer": answer} for i, answer in
              enumerate(["I don't know.", "Sorry, no idea who runs the broker.", "That depends."])]
    _post(client, "/eval-datasets/refusals/versions", {"samples": [PORT, *dodges]}, h)
    faithful_only = {"minimums": {"faithfulness": 0.7}}
    dodged = _post(client, "/eval-runs", {"dataset": "refusals", "thresholds": faithful_only}, h)
    assert dodged["passed"] and dodged["metrics"]["faithfulness"] > 0.7  # saying nothing is faithful
    assert [s["metrics"]["answered"] for s in dodged["samples"]] == [1.0, 0.0, 0.0, 0.0]
    assert dodged["metrics"]["answer_rate"] == 0.25
    pinned = {"minimums": {"faithfulness": 0.7, "answer_rate": 0.8}}
    blocked = _post(client, "/eval-runs", {"dataset": "refusals", "thresholds": pinned}, h)
    assert not blocked["passed"]
    assert [c["metric"] for c in blocked["checks"] if not c["passed"]] == ["answer_rate"]


def test_runs_retrieve_from_a_chromadb_collection_and_generate_offline(
    client: TestClient, admin_headers: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    h = admin_headers
    docs = tmp_path / "runbooks"
    docs.mkdir()
    for name, text in RUNBOOKS.items():
        (docs / name).write_text(text)
    RagStore(data_dir=settings.data_dir / "chroma").ingest("runbooks", docs)
    _post(client, "/prompts", {"name": "assistant", "kind": "chat"}, h)
    _post(client, "/prompts/assistant/versions", {"messages": [
        {"role": "system", "content": "Answer from the context only."},
        {"role": "user", "content": "{{ context }}\n\nQuestion: {{ question }}"}]}, h)
    samples = [{"id": "rollback", "question": "How do I roll a device back with edgeloop fleet rollback?",
                "relevant_sources": ["ota.md"]},
               {"id": "buffer", "question": "How long do devices buffer telemetry when the broker is down?",
                "relevant_sources": ["broker.md"], "reference_answer": "Up to 24 hours."}]
    _post(client, "/eval-datasets/ops/versions", {"samples": samples, "collection": "runbooks"}, h)
    run = _post(client, "/eval-runs", {"dataset": "ops", "prompt": "assistant@latest", "k": 1}, h)
    assert (run["generator"], run["scorer_tier"], run["prompt"]) == ("offline_extractive", "offline", "assistant@1")
    assert run["metrics"]["recall_at_k"] == 1.0 and run["metrics"]["mrr"] == 1.0
    rollback, buffer = run["samples"]
    assert rollback["contexts"][0]["source"] == "ota.md" and "edgeloop fleet rollback" in rollback["answer"]
    assert "24 hours" in buffer["answer"] and run["metrics"]["hallucination_rate"] == 0.0
    # Copying context sentences is not running the prompt: the run says so, and gates will not count it.
    assert run["config"]["note"].startswith("cannot judge a prompt offline")
    assert run["config"]["answers"] == {"generated": 2, "dataset": 0}
    lineage = client.get(f"{API}/lineage/eval_run/{run['id']}", params={"direction": "upstream"}, headers=h).json()
    assert any(e["relation"] == "evaluated_by" for e in lineage["edges"])
    missing = _post(client, "/eval-datasets/ops2/versions", {"samples": samples, "collection": "nothing-here"}, h)
    empty = client.post(f"{API}/eval-runs", json={"dataset": "ops2", "prompt": "assistant@1"}, headers=h)
    assert missing["collection"] == "nothing-here" and empty.status_code == 422
    assert "collection 'nothing-here' is empty" in empty.json()["error"]["message"]


def test_a_run_over_its_time_budget_is_stopped_and_stores_nothing(settings: Settings,
                                                                   admin_headers: dict[str, str]) -> None:
    # A run is scored inside its request: without a budget, a writer's 5,000 hostile samples held a worker for hours.
    budgeted = create_app(settings.model_copy(update={"eval_run_budget_seconds": 1e-6}))
    with TestClient(budgeted) as client:
        samples = [PORT, OWNER, {**PORT, "id": "port-2"}]
        _post(client, "/eval-datasets/golden/versions", {"samples": samples}, admin_headers)
        response = client.post(f"{API}/eval-runs", json={"dataset": "golden"}, headers=admin_headers)
        assert response.status_code == 413, response.text
        body = response.json()["error"]
        assert "budget" in body["message"] and "EDGELOOP_EVAL_RUN_BUDGET_SECONDS" in body["message"]
        assert body["details"] == {"samples_scored": 1, "samples": 3}
        assert client.get(f"{API}/eval-runs", headers=admin_headers).json() == []
        # One sample is always scored: the budget is checked between samples.
        _post(client, "/eval-datasets/single/versions", {"samples": [PORT]}, admin_headers)
        assert _post(client, "/eval-runs", {"dataset": "single"}, admin_headers)["sample_count"] == 1

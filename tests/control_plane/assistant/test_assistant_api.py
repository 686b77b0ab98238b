"""The assistant API on a served control plane: streamed, cited, owned threads that survive a restart."""

from __future__ import annotations

from fastapi.testclient import TestClient

from control_plane.auth.roles import Role
from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.settings import Settings
from tests.agents.harness import SimFleet, token
from tests.control_plane.assistant.conftest import Chat, other_chat
from tests.control_plane.events.conftest import Served


def test_degrade_answer_streams_tool_calls_chunks_citations_then_the_message(scenario: SimFleet, chat: Chat) -> None:
    thread = chat.new()
    events = chat.ask(thread, "why did sensor-clf degrade in eu-west?")
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "tool_start" and kinds[-2:] == ["citations", "message"]
    assert "chunk" in kinds and "tool_end" in kinds
    ends = {data["tool"]: data for kind, data in events if kind == "tool_end"}
    assert ends["get_drift_report"]["result"]["params"]["device_group"] == "eu-west"
    final = events[-1][1]
    assert final["text"].startswith("Templated answer") and final["intent"] == "degrade"
    assert "error_rate" in final["text"] and "eu-west" in final["text"]
    assert "".join(data["text"] for kind, data in events if kind == "chunk") == final["text"]
    assert {c["tool"] for c in final["citations"]} >= {"list_alerts", "get_drift_report"}


def test_follow_up_keeps_the_model_and_changes_the_group(scenario: SimFleet, chat: Chat) -> None:
    thread = chat.new()
    chat.answer(thread, "why did sensor-clf degrade in eu-west?")
    final = chat.answer(thread, "and in us-east?")
    assert final["intent"] == "degrade" and "sensor-clf in us-east" in final["text"]


def test_thread_is_private_and_survives_a_restart(scenario: SimFleet, chat: Chat, served: Served,
                                                 database: Database, settings: Settings) -> None:
    thread = chat.new()
    chat.answer(thread, "what is waiting for approval?")
    bob = other_chat(served, database, "bob", Role.OPERATOR)
    assert bob.http.get(f"{bob.url}/threads/{thread}", headers=bob.headers).status_code == 404
    response = bob.http.post(f"{bob.url}/threads/{thread}/messages", json={"text": "is the audit log intact?"},
                             headers=bob.headers)
    assert response.status_code == 404
    with TestClient(create_app(settings)) as restarted:
        history = restarted.get(f"/api/v1/assistant/threads/{thread}", headers=chat.headers)
    assert history.status_code == 200
    turns = history.json()["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["text"].endswith("Nothing is waiting for approval.")


def test_listed_questions_are_answered_from_tools_with_citations(scenario: SimFleet, chat: Chat) -> None:
    thread = chat.new()
    audit = chat.answer(thread, "is the audit log intact?")
    assert "The audit log is intact" in audit["text"]
    devices = chat.answer(thread, "which devices still run v2?")
    assert "3 device(s) report v2" in devices["text"] or "No device reports v2" in devices["text"]
    changes = chat.answer(thread, "what changed in the last hour?")
    assert "change(s) in the last hour" in changes["text"]
    drift = chat.answer(thread, "show drift for feature temperature since yesterday")
    assert "temperature of sensor-clf v2" in drift["text"] and "PSI" in drift["text"]
    for answer in (audit, devices, changes, drift):
        assert answer["citations"], answer


def test_runbook_answer_cites_document_and_heading(scenario: SimFleet, chat: Chat) -> None:
    final = chat.answer(chat.new(), "how do I roll back a canary?")
    runbooks = [c for c in final["citations"] if c["kind"] == "runbook"]
    assert runbooks and runbooks[0]["document"] == "runbooks/rollback-procedure.md" and runbooks[0]["heading"]


def test_unknown_model_and_open_questions_are_answered_honestly(scenario: SimFleet, chat: Chat) -> None:
    thread = chat.new()
    missing = chat.answer(thread, "why did ghost-model degrade?")
    assert "There is no model named 'ghost-model'" in missing["text"]
    open_ended = chat.answer(thread, "write me a haiku about the weather")
    assert "needs an LLM configured (EDGELOOP_LLM_BASE_URL)" in open_ended["text"]


def test_viewer_proposal_is_refused_and_explained(scenario: SimFleet, served: Served, database: Database) -> None:
    viewer = other_chat(served, database, "vera", Role.VIEWER)
    final = viewer.answer(viewer.new(), "roll back ro_demo1")
    assert "refused the proposal (403)" in final["text"]


def test_bad_messages_are_refused_before_anything_runs(served: Served, database: Database, chat: Chat) -> None:
    thread = chat.new()
    url = f"{chat.url}/threads/{thread}/messages"
    for body in ({"text": ""}, {"text": "   "}, {"text": "x" * 1_000_000}, {"text": "a\x00b"}, {}):
        assert chat.http.post(url, json=body, headers=chat.headers).status_code == 422, body
    raw = chat.http.post(url, content=b'{"text": "\xff\xfe"}', headers={**chat.headers,
                                                                      "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()  # a JSON error body, not a crash
    assert chat.http.post(f"{chat.url}/threads/nope/messages", json={"text": "hi"},
                          headers=chat.headers).status_code == 404
    assert chat.http.post(url, json={"text": "hi"}).status_code == 401
    history = chat.http.get(f"{chat.url}/threads/{thread}", headers=chat.headers).json()
    assert history["turns"] == []
    assert token(database, "unused", Role.VIEWER)  # a fresh token still works: nothing broke

"""The assistant with an LLM (a scripted OpenAI-compatible server): grounded, bounded, recorded, and failing cleanly."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from control_plane.auth.roles import Role
from control_plane.db.session import Database
from control_plane.prompts.sync import sync_directory
from control_plane.settings import Settings
from tests.agents.harness import SimFleet, token
from tests.agents.scripted_llm import completion, scripted_llm, tool_call
from tests.control_plane.assistant.conftest import Chat, other_chat
from tests.control_plane.events.conftest import Served

OPEN_QUESTION = "summarise the state of sensor-clf for my standup"
PROMPTS = Path(__file__).resolve().parents[3] / "prompts"


@pytest.fixture(autouse=True)
def registry_prompts(database: Database) -> None:
    """Put prompts/*.md (ops_assistant among them) into the registry, as start-up sync does."""
    with database.transaction() as session:
        sync_directory(session=session, directory=PROMPTS)


def _admin(database: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(database, 'adm', Role.ADMIN)}"}


def test_llm_answer_uses_tools_drops_unsupported_numbers_and_records_the_prompt_version(
        scenario: SimFleet, chat: Chat, settings: Settings, served: Served, database: Database) -> None:
    replies = [completion(tool_calls=[tool_call("list_alerts", '{"model": "sensor-clf"}')]),
               completion("sensor-clf has one open error_rate alert on version 2. Its accuracy is 0.4242.")]
    with scripted_llm(replies) as llm:
        settings.llm_base_url, settings.llm_model = llm.url, "scripted"
        final = chat.answer(chat.new(), OPEN_QUESTION)
    assert final["mode"] == "llm" and final["prompt_version"] >= 1
    assert "open error_rate alert on version 2" in final["text"] and "0.4242" not in final["text"]
    assert "list_alerts" in [t["tool"] for t in final["tools"]]
    assert llm.requests[0]["messages"][0]["role"] == "system" and len(llm.requests) == 2
    user_token = chat.headers["Authorization"].split()[1].encode()
    assert not any(user_token in raw for raw in llm.raw)  # the LLM never sees the user's token
    runs = httpx.get(f"{served.url}/api/v1/agent-runs", headers=_admin(database), timeout=30).json()
    items = runs["items"] if isinstance(runs, dict) else runs
    assert any(run["agent"] == "assistant" for run in items)


def test_an_obedient_llm_cannot_approve_and_a_viewer_cannot_propose(scenario: SimFleet, settings: Settings,
                                                                      served: Served, database: Database) -> None:
    proposal = ('{"proposal": {"action": {"kind": "rollout.abort", "rollout_id": "ro_x"}, '
                '"expected_effect": "stop it"}}')
    replies = [completion(tool_calls=[tool_call("approve_proposal", '{"proposal_id": "p1"}', "c1"),
                                      tool_call("propose_action", proposal, "c2")]),
               completion("Done as instructed.")]
    viewer = other_chat(served, database, "vic", Role.VIEWER)
    with scripted_llm(replies) as llm:
        settings.llm_base_url, settings.llm_model = llm.url, "scripted"
        final = viewer.answer(viewer.new(), OPEN_QUESTION)
    by_tool = {t["tool"]: t for t in final["tools"]}
    assert by_tool["approve_proposal"]["error"] == "no such tool"
    assert by_tool["propose_action"]["error"].startswith("403")
    proposals = httpx.get(f"{served.url}/api/v1/proposals", headers=_admin(database), timeout=30).json()
    assert proposals["items"] == []


def test_llm_down_or_garbage_ends_with_an_error_event_and_the_thread_stays_usable(
        scenario: SimFleet, chat: Chat, settings: Settings) -> None:
    thread = chat.new()
    settings.llm_base_url, settings.llm_model = "http://127.0.0.1:9/v1", "scripted"
    down = chat.ask(thread, OPEN_QUESTION)
    assert down[-1] == ("error", {"message": "the answer failed part-way (the LLM endpoint failed "
                                             "(APIConnectionError)); the thread is unchanged, ask again"})
    with scripted_llm([{"garbage": True}]) as llm:
        settings.llm_base_url = llm.url
        garbage = chat.ask(thread, OPEN_QUESTION)
    assert garbage[-1][0] == "error" and "not a chat completion" in garbage[-1][1]["message"]
    assert "The audit log is intact" in chat.answer(thread, "is the audit log intact?")["text"]
    history = chat.http.get(f"{chat.url}/threads/{thread}", headers=chat.headers).json()["turns"]
    assert [t["role"] for t in history] == ["user", "assistant"]

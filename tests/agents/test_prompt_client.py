"""The agents' prompt client against a real app served by uvicorn: TTL cache, last-good fallback, agent runs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from agents.prompt_client import PromptClient, PromptClientError, PromptUnavailable, TemplateProblem
from control_plane.auth.roles import Role
from control_plane.main import create_app
from control_plane.settings import Settings
from tests.conftest import TokenFactory


class Clock:
    """A clock the test moves by hand, so TTL expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, uvicorn.Server]]:
    """Serve the control plane with uvicorn on a free port; stop it at the end if the test has not."""
    monkeypatch.delenv("EDGELOOP_PROMPTS_DIR", raising=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", uv
    uv.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_client_caches_falls_back_and_records_runs(server: tuple[str, uvicorn.Server], make_headers: TokenFactory,
                                                   tmp_path: Path) -> None:
    url, uv = server
    admin = make_headers(Role.ADMIN)
    agent_token = make_headers(Role.AGENT)["Authorization"].removeprefix("Bearer ")
    with httpx.Client(base_url=f"{url}/api/v1", headers=admin) as http:
        http.post("/prompts", json={"name": "hello"}).raise_for_status()
        v1 = http.post("/prompts/hello/versions", json={"template": "Hello {{ name }}."}).json()
        v2 = http.post("/prompts/hello/versions", json={"template": "Hi {{ name }}!"}).json()
        force = {"override_reason": "seeding the client test"}
        http.put("/prompts/hello/labels/production", json={"version": 1, **force}).raise_for_status()

        clock, cache = Clock(), tmp_path / "prompt-cache"
        client = PromptClient(url, agent_token, ttl_seconds=30, cache_dir=cache, clock=clock)
        first = client.get("hello")
        assert (first.version, first.version_id, first.stale) == (1, v1["id"], False)
        assert client.render("hello", {"name": "Ada"}).text == "Hello Ada."
        with pytest.raises(TemplateProblem, match="name"):
            client.render("hello", {})
        with pytest.raises(PromptClientError) as not_found:
            client.get("nope")
        assert not_found.value.status_code == 404

        http.put("/prompts/hello/labels/production", json={"version": 2, **force}).raise_for_status()
        assert client.get("hello").version == 1  # still fresh in the cache
        clock.now += 31
        assert client.get("hello").version_id == v2["id"]

        run_id = client.record_run(agent="chatops", outcome="answered", prompt_version_ids=[v2["id"]],
                                   input_summary="how do I roll back?")
        graph = http.get(f"/lineage/agent_run/{run_id}", params={"direction": "upstream"}).json()
        edge = {"src": f"prompt_version:{v2['id']}", "dst": f"agent_run:{run_id}", "relation": "used_by"}
        assert edge in graph["edges"]

    uv.should_exit = True
    with pytest.raises(httpx.TransportError):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for the port to close
            httpx.get(f"{url}/healthz", timeout=1)
            time.sleep(0.05)
    clock.now += 31
    stale = client.get("hello")
    assert (stale.version, stale.stale) == (2, True) and stale.render({"name": "Ada"}).text == "Hi Ada!"
    client.close()

    restarted = PromptClient(url, agent_token, cache_dir=cache)  # a fresh process: only the disk copy is left
    assert restarted.get("hello").version_id == v2["id"] and restarted.get("hello").stale
    with pytest.raises(PromptUnavailable, match="no cached copy"):
        restarted.get("hello", "staging")
    restarted.close()

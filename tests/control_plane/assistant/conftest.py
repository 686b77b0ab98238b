"""Assistant tests: a served control plane, a small simulated fleet and an SSE reader for the chat stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from control_plane.alerts.schemas import AlertCheck
from control_plane.auth.roles import Role
from control_plane.db.session import Database
from tests.agents.harness import SimFleet, token
from tests.control_plane.events.conftest import Served, served

__all__ = ["served"]


class Chat:
    """One user's view of the assistant API."""

    def __init__(self, url: str, bearer: str) -> None:
        self.url = url + "/api/v1/assistant"
        self.headers = {"Authorization": f"Bearer {bearer}"}
        self.http = httpx.Client(timeout=60)

    def new(self) -> str:
        """Create a thread and return its id."""
        response = self.http.post(f"{self.url}/threads", headers=self.headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def ask(self, thread_id: str, text: str) -> list[tuple[str, Any]]:
        """Ask and return every (event, data) of the stream."""
        events: list[tuple[str, Any]] = []
        with connect_sse(self.http, "POST", f"{self.url}/threads/{thread_id}/messages", json={"text": text},
                         headers=self.headers) as source:
            assert source.response.status_code == 200, source.response.read()
            for message in source.iter_sse():
                events.append((message.event, json.loads(message.data)))
        return events

    def answer(self, thread_id: str, text: str) -> dict[str, Any]:
        """Ask and return the final message (failing on an error event)."""
        events = self.ask(thread_id, text)
        assert events[-1][0] == "message", events[-3:]
        final: dict[str, Any] = events[-1][1]
        return final


@pytest.fixture
def scenario(served: Served, database: Database) -> Iterator[SimFleet]:
    """sensor-clf v1/v2; eu-west runs v2 with shifted temperature and errors, us-east runs v1; one alert."""
    sim = SimFleet(served.url, database)
    sim.model(1, 2)
    sim.devices("eu-west", "dev-eu-1", "dev-eu-2")
    sim.devices("us-east", "dev-us-1")
    for device in ("dev-eu-1", "dev-eu-2"):
        sim.send(device, version=2, errors=30, shift={0: 4.0})
    sim.send("dev-us-1", version=2)
    sim.alert(AlertCheck.ERROR_RATE, "error rate above 5% on v2", version=2, evidence={"error_rate": 0.15})
    yield sim
    sim.close()


@pytest.fixture
def chat(served: Served, database: Database) -> Iterator[Chat]:
    """An operator's chat client."""
    client = Chat(served.url, token(database, "alice", Role.OPERATOR))
    yield client
    client.http.close()


def other_chat(served: Served, database: Database, name: str, role: Role) -> Chat:
    """A chat client of another user."""
    return Chat(served.url, token(database, name, role))

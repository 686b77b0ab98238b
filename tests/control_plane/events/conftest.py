"""A served control plane (uvicorn in a thread) for streaming tests, with tokens per role."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import connect_sse

from control_plane.main import create_app
from control_plane.mqtt.broker import free_port
from control_plane.settings import Settings
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import wait_for


@dataclass
class Served:
    """Base URL and an HTTP client of a running server."""

    url: str
    http: httpx.Client

    def events(self, headers: dict[str, str], count: int, **params: Any) -> list[dict[str, Any]]:
        """Read ``count`` SSE messages (id and JSON data) from /events, then disconnect."""
        extra = params.pop("extra_headers", {})
        received: list[dict[str, Any]] = []
        with connect_sse(self.http, "GET", f"{self.url}/api/v1/events", headers={**headers, **extra},
                         params=params, timeout=httpx.Timeout(20.0)) as source:
            for message in source.iter_sse():
                received.append({"id": message.id, **message.json()})
                if len(received) == count:
                    break
        return received


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    """Serve the app on a free port for the test."""
    settings.port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    with httpx.Client(timeout=20) as http:
        yield Served(f"http://127.0.0.1:{settings.port}", http)
    server.should_exit = True
    thread.join(15)


def model_changes(served: Served, headers: dict[str, str], names: list[str]) -> None:
    """Make one audited change per name (a registered model)."""
    for name in names:
        response = served.http.post(f"{served.url}/api/v1/models", json={"name": name}, headers=headers)
        assert response.status_code == 201, response.text


__all__ = ["Served", "TokenFactory", "model_changes"]

"""Parallel requests past the pool never block the event loop (control_plane.db.session.RequestSlots)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from control_plane.db.session import POOL_MAX_OVERFLOW, POOL_SIZE
from control_plane.main import create_app
from control_plane.mqtt.broker import free_port
from control_plane.settings import Settings
from tests.conftest import TokenFactory

PARALLEL = 3 * (POOL_SIZE + POOL_MAX_OVERFLOW)  # well past the pool and the 40-thread worker pool


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """Serve the app on a free port with uvicorn, one worker, as `edgeloop serve` does."""
    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


async def _burst(base_url: str, headers: dict[str, str]) -> list[int]:
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
        responses = await asyncio.gather(*(http.get("/api/v1/fleet/devices") for _ in range(PARALLEL)))
    return [r.status_code for r in responses]


def test_a_burst_past_the_pool_is_answered_in_full(served: str, make_headers: TokenFactory) -> None:
    # Before: each request took its pooled connection on the event loop and gave it back there, so the request after
    # the pool's last connection blocked the loop until the pool timeout (30 s) and failed with 500.
    statuses = asyncio.run(_burst(served, make_headers("viewer")))
    assert statuses == [200] * PARALLEL
    with httpx.Client(base_url=served, timeout=10) as http:
        assert http.get("/healthz").status_code == 200

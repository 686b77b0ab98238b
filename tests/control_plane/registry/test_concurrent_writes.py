"""Concurrent write requests on one server: none may wait for the database lock on the event loop."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient


def test_concurrent_writers_all_succeed(client: TestClient, operator_headers: dict[str, str]) -> None:
    # Before the fix, a second writer's authentication began a SQLite write transaction on the event loop and
    # waited there for the first writer's lock, whose commit needed that same loop: a 30 s stall, then a 500.
    def create(index: int) -> int:
        response = client.post("/api/v1/models", json={"name": f"concurrent-{index}"}, headers=operator_headers)
        return response.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(create, range(16)))
    assert statuses == [201] * 16
    listed = client.get("/api/v1/models", params={"limit": 100}, headers=operator_headers).json()
    assert {m["name"] for m in listed} >= {f"concurrent-{i}" for i in range(16)}

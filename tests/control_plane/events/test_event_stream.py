"""GET /events: SSE over the audit log; ids are audit seqs, Last-Event-ID resumes exactly, role filtering."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from control_plane.db.session import Database
from control_plane.events import service
from control_plane.settings import Settings
from tests.conftest import TokenFactory
from tests.control_plane.events.conftest import Served, model_changes


def test_stream_delivers_new_changes_and_resumes_exactly(served: Served, database: Database,
                                                         make_headers: TokenFactory) -> None:
    viewer, operator = make_headers("viewer"), make_headers("operator")
    model_changes(served, operator, ["before"])
    with database.transaction(write=False) as session:
        head = service.head_seq(session)
    received: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: received.extend(served.events(viewer, 3, after=str(head))))
    reader.start()
    model_changes(served, operator, ["a", "b", "c", "d", "e"])  # live, or caught up: the same events either way
    reader.join(30)
    assert [e["data"]["name"] for e in received] == ["a", "b", "c"]
    assert all(e["id"] == str(e["seq"]) and e["action"] == "model.create" for e in received)
    seqs = [int(e["id"]) for e in received]
    assert seqs == sorted(seqs)

    resumed = served.events(viewer, 2, extra_headers={"Last-Event-ID": received[-1]["id"]})
    assert [e["data"]["name"] for e in resumed] == ["d", "e"]
    assert int(resumed[0]["id"]) == seqs[-1] + 1
    from_start = served.events(viewer, 1, after="0")
    assert from_start[0]["data"]["name"] == "before"  # seq 1-2 are token entries a viewer may not see


def test_filters_and_roles(served: Served, make_headers: TokenFactory) -> None:
    admin = make_headers("admin")
    viewer = make_headers("viewer")
    model_changes(served, admin, ["m1"])
    make_headers("operator", name="late-token")  # token.create: admin-only
    model_changes(served, admin, ["m2"])
    everything = served.events(admin, 5, after="0")
    assert any(e["resource_type"] == "token" for e in everything)
    assert "elp_" not in str(everything)
    seen_by_viewer = served.events(viewer, 2, after="0")
    assert [e["data"]["name"] for e in seen_by_viewer] == ["m1", "m2"]  # the token entries are skipped
    only_models = served.events(admin, 1, after="0", resource_type=["nothing", "mod*"])
    assert only_models[0]["action"] == "model.create"
    by_action = served.events(admin, 1, after="0", action=["token.*"])
    assert by_action[0]["action"] == "token.create"


def test_bad_last_event_id(served: Served, make_headers: TokenFactory) -> None:
    viewer = make_headers("viewer")
    url = f"{served.url}/api/v1/events"
    for bad in ("abc", "-1", "1e3", "99999999999999999999999", "null", ""):
        response = served.http.get(url, headers={**viewer, "Last-Event-ID": bad})
        assert response.status_code == 422, (bad, response.text)
        assert "Last-Event-ID" in response.json()["error"]["message"]
    assert served.http.get(url, params={"after": "x"}, headers=viewer).status_code == 422
    beyond = served.http.get(url, headers={**viewer, "Last-Event-ID": "1000000"})
    assert beyond.status_code == 409 and "beyond" in beyond.json()["error"]["message"]
    assert served.http.get(url, params={"action": "Bad Filter"}, headers=viewer).status_code == 422
    assert served.http.get(url).status_code == 401
    assert served.http.get(url, headers=make_headers("device", device_id="d1")).status_code == 403


def test_many_streams_opening_at_once_all_start(served: Served, make_headers: TokenFactory) -> None:
    """More simultaneous starts than the read pool has connections (15): none may wait on another's connection."""
    import asyncio

    import httpx
    from httpx_sse import aconnect_sse

    viewer, operator = make_headers("viewer"), make_headers("operator")
    model_changes(served, operator, ["seed"])

    async def first_event(client: httpx.AsyncClient) -> str:
        async with aconnect_sse(client, "GET", f"{served.url}/api/v1/events", headers=viewer,
                                params={"after": "0", "resource_type": "model"}) as source:
            async for message in source.aiter_sse():
                return str(message.json()["data"]["name"])
        return ""

    async def open_all() -> list[str]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(timeout=httpx.Timeout(20.0), limits=limits) as client:
            return await asyncio.gather(*(first_event(client) for _ in range(40)))

    assert asyncio.run(open_all()) == ["seed"] * 40


def test_a_commit_by_another_process_wakes_the_sqlite_hub_without_the_head_poll(database: Database,
                                                                                 settings: Settings) -> None:
    """The hub stats the SQLite files; a commit on another connection changes them and ends the wait at once."""
    import asyncio

    from control_plane.audit import service as audit
    from control_plane.events.hub import EventHub, _stamp

    if not database.is_sqlite:
        pytest.skip("PostgreSQL wakes on NOTIFY (covered by the streaming tests above)")
    # A safety-net poll of 10,000 s: only the file change can end the wait within the test.
    hub = EventHub(database, settings.model_copy(update={"events_poll_seconds": 200.0}))
    assert hub.sqlite_files and hub.idle_seconds == 10_000
    hub.stat_seconds = 0.01
    other = Database(database.url)  # its own engine and connections, as a second process would have
    try:
        stamp = _stamp(hub.sqlite_files)

        async def wait_then_commit() -> None:
            hub.subscribe()  # with nobody subscribed the hub does not watch the files at all
            hub.changed.clear()
            waiting = asyncio.create_task(hub._wait_for_files(stamp))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            with other.transaction() as session:
                audit.record(session, actor="test", action="test.change", resource=("test", "1"), data={})
            await asyncio.wait_for(waiting, 60)  # a generous bound: without the stat it would wait 10,000 s

        asyncio.run(wait_then_commit())
        assert _stamp(hub.sqlite_files) != stamp
    finally:
        other.dispose()

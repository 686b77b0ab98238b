"""The worker follows the change stream, persists its cursor, and after a restart neither misses nor repeats."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agents.checkpoint import open_checkpointer
from agents.config import AgentSettings
from agents.runner import run_worker
from agents.worker import AgentWorker, Cursor
from control_plane.alerts.schemas import AlertCheck, Severity
from control_plane.auth.roles import Role
from control_plane.db.session import Database
from control_plane.events.schemas import Event
from tests.agents.harness import SimFleet, agent_client, token
from tests.control_plane.events.conftest import Served
from tests.control_plane.fleet.conftest import wait_for


@contextmanager
def _worker(served: Served, database: Database, tmp_path: Path, seen: list[int]) -> Iterator[AgentWorker]:
    stop = threading.Event()
    with agent_client(served.url, database) as client, \
            open_checkpointer(f"sqlite:///{tmp_path / 'checkpoints.db'}") as saver:
        worker = AgentWorker(client, saver, None, Cursor(tmp_path / "cursor.json"))
        handle = worker.handle

        def recording(event: Event) -> None:
            seen.append(event.seq)
            handle(event)

        worker.handle = recording  # type: ignore[method-assign]
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"read_timeout": 1.0}, daemon=True)
        thread.start()
        try:
            yield worker
        finally:
            stop.set()
            thread.join(20)
            assert not thread.is_alive()


def _notes(fleet: SimFleet, kind: str) -> list[dict[str, object]]:
    incidents = fleet.call("GET", "/incidents")["items"]
    return [e for i in incidents for e in fleet.call("GET", f"/incidents/{i['id']}/timeline") if e["kind"] == kind]


def test_worker_resumes_the_stream_after_a_restart_without_missing_or_repeating(
        served: Served, fleet: SimFleet, database: Database, tmp_path: Path) -> None:
    fleet.devices("north", "d1", "d2", "d3", "d4")
    for device in ("d1", "d2", "d3", "d4"):
        fleet.send(device, errors=8 if device == "d3" else 0)
    first: list[int] = []
    second: list[int] = []
    with _worker(served, database, tmp_path, first):
        fleet.alert(AlertCheck.ERROR_RATE, "error rate up")
        wait_for(lambda: len(_notes(fleet, "proposal")) == 1, timeout=30)
    cursor = Cursor(tmp_path / "cursor.json").load()
    assert cursor is not None
    # While the worker is down, the incident grows.
    fleet.alert(AlertCheck.LATENCY, "latency up", severity=Severity.WARNING)
    with _worker(served, database, tmp_path, second):
        wait_for(lambda: len(_notes(fleet, "triage_note")) == 2 and len(_notes(fleet, "rca_report")) == 2,
                 timeout=30)
    assert len(_notes(fleet, "triage_note")) == 2 and len(_notes(fleet, "rca_report")) == 2
    assert len(_notes(fleet, "proposal")) == 1  # the incident's remediation is still waiting for approval
    assert (Cursor(tmp_path / "cursor.json").load() or 0) > cursor
    assert first and second and min(second) > cursor >= max(first) and not set(first) & set(second)




def test_the_worker_refuses_any_token_but_an_agent_one(served: Served, database: Database, tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path, agents_api_url=served.url)
    with pytest.raises(SystemExit, match="agent-role token"):
        run_worker(settings, token(database, "ops", Role.OPERATOR), threading.Event())

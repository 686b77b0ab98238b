"""kill -9 of a real `edgeloop serve` in the middle of an execution, then a restart: the action happens once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from control_plane.approvals.models import Proposal
from control_plane.audit.models import AuditEntry
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.session import Database
from control_plane.fleet.models import Rollout
from control_plane.main import create_app
from control_plane.mqtt.broker import free_port
from control_plane.settings import Settings
from tests.control_plane.fleet.conftest import FleetModels, provision, register, wait_for

pytestmark = pytest.mark.slow
HOLD_LINE = "holding its transaction"


def _token(database: Database, name: str, role: Role) -> dict[str, str]:
    with database.transaction() as session:
        _, token = auth_service.create_token(session=session, actor="admin:test",
                                             request=TokenCreate(name=name, role=role))
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def serve(settings: Settings, log: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run `edgeloop serve` as its own process on a free port; yield it and its base URL."""
    port = free_port()
    environment = {**os.environ, "EDGELOOP_DATA_DIR": str(settings.data_dir),
                   "EDGELOOP_DATABASE_URL": settings.resolved_database_url, "EDGELOOP_PORT": str(port),
                   "EDGELOOP_APPROVAL_LEASE_SECONDS": "1", "EDGELOOP_AUDIT_CHECKPOINT_SECONDS": "3600", **env}
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "control_plane.cli.main", "serve"], env=environment,
                                   stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=60, interval=0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(20)


def _count(database: Database, action: str, resource_id: str) -> int:
    with database.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == action, AuditEntry.resource_id == resource_id)) or 0)


def test_kill_9_mid_execution_then_restart_pauses_once(settings: Settings, database: Database,
                                                       fleet_models: FleetModels, tmp_path: Path) -> None:
    operator = _token(database, "ops", Role.OPERATOR)
    agent, approver = _token(database, "bot", Role.AGENT), _token(database, "alice", Role.APPROVER)
    # Set up in process, then stop that app, so only the served process executes anything.
    with TestClient(create_app(settings)) as client:
        register(client, operator, "digits", 1, [(fleet_models.v1_fp32, "fp32")])
        for device in ("dev-1", "dev-2"):
            provision(client, operator, device, group="g")
        rollout: dict[str, Any] = client.post("/api/v1/fleet/deployments", headers=operator, json={
            "model": "digits", "version": 1, "selector": {"group": "g"}}).json()
        proposal = client.post("/api/v1/proposals", headers=agent, json={
            "action": {"kind": "rollout.pause", "rollout_id": rollout["id"]}, "expected_effect": "stop"}).json()
    assert rollout["state"] == "in_progress" and proposal["state"] == "pending"

    first_log = tmp_path / "serve-1.log"
    with serve(settings, first_log, EDGELOOP_APPROVAL_EXECUTION_HOLD_SECONDS="120") as (process, url):
        approved = httpx.post(f"{url}/api/v1/proposals/{proposal['id']}/approve", headers=approver,
                              json={"reason": "errors"}, timeout=30)
        assert approved.status_code == 200, approved.text
        wait_for(lambda: HOLD_LINE in first_log.read_text(), timeout=60, interval=0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(20)

    with database.transaction(write=False) as session:
        killed = session.get(Proposal, proposal["id"])
        assert killed is not None and (killed.state, killed.attempts) == ("executing", 1)
        paused_rollout = session.get(Rollout, rollout["id"])
        assert paused_rollout is not None and paused_rollout.state == "in_progress"  # the pause was undone
    assert _count(database, "rollout.paused", rollout["id"]) == 0

    with serve(settings, tmp_path / "serve-2.log") as (_, url):
        def executed() -> dict[str, Any] | None:
            body = httpx.get(f"{url}/api/v1/proposals/{proposal['id']}", headers=agent, timeout=10).json()
            return dict(body) if body["state"] in ("executed", "failed") else None
        done = wait_for(executed, timeout=60, interval=0.2)
        assert done["state"] == "executed" and done["attempts"] == 2, done
        assert httpx.get(f"{url}/api/v1/fleet/rollouts/{rollout['id']}", headers=agent).json()["state"] == "paused"
    assert _count(database, "rollout.paused", rollout["id"]) == 1
    assert _count(database, "proposal.executing", proposal["id"]) == 2
    assert _count(database, "proposal.executed", proposal["id"]) == 1

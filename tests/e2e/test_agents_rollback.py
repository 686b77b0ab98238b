"""Done when: an injected fault on a simulated fleet goes alert -> incident -> RCA -> pending proposal ->
approval through the API -> executed rollback -> verified recovery, driven by the agents' worker.

uvicorn control plane + private mosquitto + two real `python -m edge_agent` processes; the worker follows the
change stream with an agent token. The fault: v2 errs on most calls (windows posted as the devices, through the
real ingest path); after the rollback the devices serve v1 and their fresh windows are clean.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from agents.checkpoint import open_checkpointer
from agents.control_plane_client import ControlPlaneClient, ControlPlaneError
from agents.worker import AgentWorker, Cursor
from control_plane.alerts.schemas import AlertCheck
from control_plane.approvals.schemas import ProposalState
from control_plane.audit.models import AuditEntry
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.fleet.models import Rollout
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto, free_port
from control_plane.settings import Settings
from tests.agents.harness import SimFleet
from tests.control_plane.fleet import conftest as fleet_conftest
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e.test_approval_rollback import Served
from tests.e2e.test_ota_rollout import DEVICES, ControlPlane, _device_health, _start_agent, _upload

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
fleet_models = fleet_conftest.fleet_models
private_broker = fleet_conftest.private_broker


@pytest.fixture
def served(tmp_path: Path, private_broker: PrivateMosquitto) -> Iterator[Served]:
    """Serve the app on the authenticated private broker, with a token per role (the agent's included)."""
    database_url = f"sqlite:///{tmp_path / 'cp.db'}"
    upgrade(database_url)
    port = free_port()
    settings = Settings(data_dir=tmp_path / "cp", database_url=database_url, port=port, fleet_step_seconds=0.2,
                        audit_checkpoint_seconds=3600, **private_broker.settings_overrides())
    database = Database(database_url)
    tokens = {}
    with database.transaction() as session:
        for role, name in (("operator", "ops"), ("approver", "alice"), ("admin", "root"), ("agent", "agents")):
            _, tokens[role] = auth_service.create_token(session=session, actor="admin:e2e",
                                                        request=TokenCreate(name=name, role=Role(role)))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    with httpx.Client(timeout=30) as http:
        headers = {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}
        yield Served(ControlPlane(f"http://127.0.0.1:{port}", http, headers), database, tokens)
    server.should_exit = True
    thread.join(15)
    database.dispose()


def test_injected_fault_is_rolled_back_after_approval_and_verified(
        served: Served, fleet_models: FleetModels, tmp_path: Path) -> None:
    cp, database = served.cp, served.database
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    sim = SimFleet(cp.url, database)
    agents: list[subprocess.Popen[bytes]] = []
    ports = {device: free_port() for device in DEVICES}
    stop = threading.Event()
    approver = ControlPlaneClient(cp.url, served.tokens["approver"])
    try:
        for device in DEVICES:
            provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "e2e"})
            sim.device_tokens[device] = provisioned["token"]
            (tmp_path / "agents" / device).mkdir(parents=True)
            agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
        wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "e2e"})),
                 timeout=40, interval=0.2)
        first = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                           "selector": {"group": "e2e"}})
        assert cp.wait_state(first["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        for device in DEVICES:  # v1 served cleanly for the last hour
            sim.send(device, model="digits", version=1, windows=4, start=time.time() - 3600)
        second = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 2,
                                                            "selector": {"group": "e2e"}})
        assert cp.wait_state(second["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values()))

        # The worker runs with an agent token only.
        with ControlPlaneClient(cp.url, served.tokens["agent"]) as agent, \
                open_checkpointer(f"sqlite:///{tmp_path / 'checkpoints.db'}") as saver:
            worker = AgentWorker(agent, saver, None, Cursor(tmp_path / "cursor.json"), verify_windows=2)
            thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"start_at_head": True,
                                                                               "read_timeout": 1.0}, daemon=True)
            thread.start()
            time.sleep(0.5)
            # The fault: v2 errs on 80% of calls.
            for device in DEVICES:
                sim.send(device, model="digits", version=2, windows=3, errors=8)
            sim.alert(AlertCheck.ERROR_RATE, "error rate 80% after v2", model="digits", version=2,
                      rollout_id=second["id"], deployment_id=second["deployment_id"])
            wait_for(lambda: approver.list_proposals(state=[ProposalState.PENDING]).total == 1, timeout=30)
            proposal = approver.list_proposals(state=[ProposalState.PENDING]).items[0]
            assert proposal.kind == "rollout.rollback" and proposal.target_id == second["id"]
            assert proposal.proposer.startswith("agent:")
            incident = approver.get_incident(proposal.incident_id or "")
            rca = next(e for e in approver.timeline(incident.id) if e.kind == "rca_report")
            assert rca.body["hypotheses"][0]["title"].startswith("bad_model_version")

            approver.approve(proposal.id, "v2 errors confirmed")
            done = approver.wait_for_proposal(proposal.id, timeout_seconds=60)
            assert done.state == ProposalState.EXECUTED, done
            back_id = (done.result or {})["rollback_rollout_id"]
            assert cp.wait_state(back_id, "succeeded", "aborted", "failed")["state"] == "succeeded"
            wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 1}
                                 for p in ports.values()))
            for device in DEVICES:  # back on v1: fresh, clean windows
                sim.send(device, model="digits", version=1, windows=1, start=time.time() + 1, seed=7)
            wait_for(lambda: approver.get_proposal(proposal.id).verification is not None, timeout=30)
            stop.set()
            thread.join(20)
            # Resumed twice more, approved twice more: the rollback still ran once.
            worker.on_proposal(proposal.id)
            worker.on_proposal(proposal.id)
            with pytest.raises(ControlPlaneError) as again:
                approver.approve(proposal.id, "again")
            assert again.value.status_code == 409
        assert approver.get_proposal(proposal.id).verification == "recovered"
        kinds = [e.kind.value for e in approver.timeline(incident.id)]
        assert kinds == ["alert_joined", "triage_note", "rca_report", "proposal", "decision", "execution",
                         "execution", "verification"]
        with database.transaction(write=False) as session:
            rollbacks = session.scalar(select(func.count()).select_from(Rollout).where(
                Rollout.rollback_of == second["id"]))
            executed = session.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.action == "proposal.executed"))
        assert rollbacks == 1 and executed == 1
        assert all(process.poll() is None for process in agents)
    finally:
        stop.set()
        approver.close()
        sim.close()
        for process in agents:
            process.terminate()
        for process in agents:
            process.wait(10)

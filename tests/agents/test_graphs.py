"""The graphs against a served control plane: device fault -> quarantine proposal -> restart -> approve -> verify."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import func, select

from agents.checkpoint import open_checkpointer
from agents.control_plane_client import ControlPlaneClient
from agents.rca.graph import build_graph as build_rca
from agents.remediation.graph import build_graph as build_remediation
from agents.triage.graph import build_graph as build_triage
from agents.worker import AgentWorker, Cursor
from control_plane.alerts.schemas import AlertCheck
from control_plane.approvals.models import DeviceQuarantine
from control_plane.approvals.schemas import ProposalState
from control_plane.audit.models import AuditEntry
from control_plane.auth.roles import Role
from control_plane.db.session import Database
from tests.agents.harness import SimFleet, agent_client, token
from tests.control_plane.events.conftest import Served


def _faulty_fleet(fleet: SimFleet) -> str:
    fleet.devices("north", "d1", "d2", "d3", "d4")
    for device in ("d1", "d2", "d3", "d4"):
        fleet.send(device, errors=8 if device == "d3" else 0)
    return fleet.alert(AlertCheck.ERROR_RATE, "error rate 20% on sensor-clf v1")


def test_device_fault_is_triaged_explained_and_proposed_then_verified_after_restart(
        served: Served, fleet: SimFleet, database: Database, tmp_path: Path, db_url: str) -> None:
    alert_id = _faulty_fleet(fleet)
    # The checkpointer follows the database under test: SQLite file, or PostgreSQL (PostgresSaver).
    checkpoints = db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'checkpoints.db'}"
    with agent_client(served.url, database) as client, open_checkpointer(checkpoints) as saver:
        triage = build_triage(saver, client, None).invoke({"alert_id": alert_id}, {"configurable": {"thread_id": "t"}})
        assert triage["decision"] == "investigate"
        thread = {"configurable": {"thread_id": f"remediation:{triage['incident_id']}"}}
        rca = build_rca(saver, client, None).invoke({"incident_id": triage["incident_id"]},
                                                    {"configurable": {"thread_id": "r"}})
        top = rca["findings"][0]
        assert top["cause"] == "device_fault" and top["scope"]["device_id"] == "d3"
        assert rca["explanation"].startswith("[templated explanation") and rca["explained_by"] == "template"
        paused = build_remediation(saver, client, None).invoke(
            {"incident_id": triage["incident_id"], "findings": rca["findings"]}, thread)
        assert "__interrupt__" in paused
        proposal_id = paused["proposal_id"]
        assert client.get_proposal(proposal_id).state == ProposalState.PENDING
    # The agent process is gone; an approver decides; fresh telemetry arrives from the healthy devices.
    with ControlPlaneClient(served.url, token(database, "alice", Role.APPROVER)) as approver:
        approver.approve(proposal_id, "d3 is broken")
        assert approver.wait_for_proposal(proposal_id, timeout_seconds=30).state == ProposalState.EXECUTED
    with agent_client(served.url, database) as client, open_checkpointer(checkpoints) as saver:
        worker = AgentWorker(client, saver, None, Cursor(tmp_path / "cursor.json"))
        # Executed, but no window has closed since: the graph waits for telemetry instead of guessing. The
        # "executed" event is not read yet (queued behind a burst of alerts): the busy-stream poll finds it.
        worker.poll_executed()
        assert client.get_proposal(proposal_id).verification is None
        assert worker.cursor.waiting == {f"remediation:{triage['incident_id']}"}
        for device in ("d1", "d2", "d4"):
            fleet.send(device, windows=1, start=time.time() + 1)
        worker.poll_verifications()
        worker.on_proposal(proposal_id)  # a repeated resume finds nothing waiting
        assert not worker.cursor.waiting
        done = client.get_proposal(proposal_id)
        assert done.verification == "recovered", done.verification_note
        kinds = [e.kind.value for e in client.timeline(triage["incident_id"])]
        # Every run carries its duration, which /metrics reads (edgeloop_agent_run_duration_seconds).
        runs = {agent: client.read_json("/agent-runs", {"agent": agent}) for agent in ("triage", "rca")}
        # A later alert on the decided incident plans the same action with other evidence: the key is taken, so
        # the graph ends quietly (no second proposal, no failing run).
        again = build_remediation(saver, client, None).invoke(
            {"incident_id": triage["incident_id"], "findings": [{**top, "refs": []}]},
            {"configurable": {"thread_id": "remediation:again"}})
        assert again["outcome"] == "already_proposed" and "__interrupt__" not in again
    assert kinds.count("verification") == 1 and kinds.count("rca_report") == 1 and kinds.count("triage_note") == 1
    for agent, recorded in runs.items():
        assert recorded and all(isinstance(r["details"].get("duration_seconds"), float | int)
                                and r["details"]["duration_seconds"] >= 0 for r in recorded), (agent, recorded)
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(DeviceQuarantine)) == 1
        executed = session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "proposal.executed"))
        assert executed == 1

"""Done when: an agent's rollback proposal is approved, executed exactly once on real devices, and verified.

uvicorn control plane + private mosquitto + two real `python -m edge_agent` processes. An error-rate alert on
digits v2 opens an incident; the agent (agent token, typed client) posts an RCA report and proposes rolling
the v2 rollout back; an approver approves through the API; the control plane's executor runs
fleet.rollouts.rollback once; both devices return to v1; the agent records the verification. Every step is on
the incident's timeline and in the audit log.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from agents.control_plane_client import ControlPlaneClient
from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.approvals.schemas import ProposalCreate, ProposalState, VerificationCreate
from control_plane.audit.models import AuditEntry
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.fleet.models import Rollout
from control_plane.incidents.schemas import RcaReport
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto, free_port
from control_plane.settings import Settings
from tests.control_plane.fleet import conftest as fleet_conftest
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e.test_ota_rollout import DEVICES, ControlPlane, _device_health, _start_agent, _upload

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
fleet_models = fleet_conftest.fleet_models
private_broker = fleet_conftest.private_broker


@dataclass
class Served:
    """The served control plane, its database and a token per role."""

    cp: ControlPlane
    database: Database
    tokens: dict[str, str]


@pytest.fixture
def served(tmp_path: Path, private_broker: PrivateMosquitto) -> Iterator[Served]:
    """Serve the app with the MQTT bridge and the approval executor."""
    database_url = f"sqlite:///{tmp_path / 'cp.db'}"
    upgrade(database_url)
    port = free_port()
    settings = Settings(data_dir=tmp_path / "cp", database_url=database_url, port=port,
                        **private_broker.settings_overrides(),
                        fleet_step_seconds=0.2, audit_checkpoint_seconds=3600)
    database = Database(database_url)
    tokens = {}
    with database.transaction() as session:
        for role, name in (("operator", "ops"), ("approver", "alice"), ("admin", "root"), ("agent", "remediator")):
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


def test_agent_proposal_approved_rolls_back_once_and_is_verified(
        served: Served, fleet_models: FleetModels, tmp_path: Path) -> None:
    cp, database = served.cp, served.database
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    agents: list[subprocess.Popen[bytes]] = []
    ports = {device: free_port() for device in DEVICES}
    agent = ControlPlaneClient(cp.url, served.tokens["agent"])
    approver = ControlPlaneClient(cp.url, served.tokens["approver"])
    try:
        for device in DEVICES:
            provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "e2e"})
            (tmp_path / "agents" / device).mkdir(parents=True)
            agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
        wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "e2e"})),
                 timeout=40, interval=0.2)
        first = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 1,
                                                           "selector": {"group": "e2e"}})
        assert cp.wait_state(first["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        second = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": 2,
                                                            "selector": {"group": "e2e"}})
        assert cp.wait_state(second["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values()))

        # A monitor raises an error-rate alert on v2: it opens an incident.
        with database.transaction() as session:
            alert, _ = alerts.raise_alert(session=session, actor="system:monitor", request=AlertRaise(
                fingerprint="digits-2-error-rate", check=AlertCheck.ERROR_RATE, severity=Severity.CRITICAL,
                title="error rate 12% after v2", model_name="digits", model_version=2,
                deployment_id=second["deployment_id"], rollout_id=second["id"]))
        incident = agent.list_incidents().items[0]
        assert incident.alert_ids == [alert.id] and incident.severity == "critical"

        # The agent reports and proposes; it cannot approve.
        agent.post(incident.id, RcaReport.model_validate({
            "kind": "rca_report", "summary": "v2 regressed", "hypotheses": [{
                "rank": 1, "title": "v2 model regression", "confidence": 0.8,
                "evidence": [{"kind": "alert", "id": alert.id}, {"kind": "rollout", "id": second["id"]}]}]}))
        proposal = agent.propose(ProposalCreate.model_validate({
            "action": {"kind": "rollout.rollback", "rollout_id": second["id"], "strategy": {"kind": "all_at_once"}},
            "incident_id": incident.id, "evidence": [{"kind": "alert", "id": alert.id}],
            "expected_effect": "both devices back on v1; error rate back to baseline", "risk": "medium",
            "idempotency_key": f"{incident.id}-rollback"}))
        assert proposal.state == ProposalState.PENDING and proposal.proposer == "agent:remediator"
        with pytest.raises(Exception, match="403"):
            agent.approve(proposal.id, "self-approval")

        approver.approve(proposal.id, "canary error rate confirmed")
        done = agent.wait_for_proposal(proposal.id, timeout_seconds=60)
        assert done.state == ProposalState.EXECUTED, done
        back_id = done.result["rollback_rollout_id"] if done.result else ""
        assert cp.wait_state(back_id, "succeeded", "aborted", "failed")["state"] == "succeeded"
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 1} for p in ports.values()))

        verified = agent.verify(proposal.id, VerificationCreate.model_validate({
            "outcome": "recovered", "note": "devices serve v1", "evidence": [{"kind": "rollout", "id": back_id}]}))
        assert verified.verification == "recovered"

        kinds = [(e.kind.value, e.body.get("status") or e.body.get("decision") or e.body.get("outcome"), e.author)
                 for e in agent.timeline(incident.id)]
        assert kinds == [
            ("alert_joined", None, "system:incident-correlator"), ("rca_report", None, "agent:remediator"),
            ("proposal", None, "agent:remediator"), ("decision", "approved", "approver:alice"),
            ("execution", "started", "system:approval-executor"),
            ("execution", "executed", "system:approval-executor"), ("verification", "recovered", "agent:remediator")]
        with database.transaction(write=False) as session:
            actions = [e.action for e in session.scalars(select(AuditEntry).where(
                AuditEntry.resource_id == proposal.id).order_by(AuditEntry.seq))]
            rolled_back = session.scalars(select(AuditEntry).where(AuditEntry.action == "rollout.rolled_back"))
            rollbacks = session.scalar(select(func.count()).select_from(Rollout).where(
                Rollout.rollback_of == second["id"]))
            assert actions == ["proposal.create", "proposal.approved", "proposal.executing", "proposal.executed",
                               "proposal.verified"]
            assert [e.actor for e in rolled_back] == ["approver:alice"] and rollbacks == 1
        assert all(process.poll() is None for process in agents)
    finally:
        agent.close()
        approver.close()
        for process in agents:
            process.terminate()
        for process in agents:
            process.wait(10)

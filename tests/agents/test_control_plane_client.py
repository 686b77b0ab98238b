"""The typed control-plane client against a served app: incidents, proposals, errors and the event stream."""

from __future__ import annotations

import pytest

from agents.control_plane_client import ControlPlaneClient, ControlPlaneError
from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.approvals.schemas import ProposalCreate, ProposalState
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.session import Database
from control_plane.incidents.schemas import Comment, IncidentState, TriageNote
from control_plane.registry.models import ModelVersion, RegisteredModel
from tests.control_plane.events.conftest import Served, served

__all__ = ["served"]


def _token(database: Database, name: str, role: Role) -> str:
    with database.transaction() as session:
        return auth_service.create_token(session=session, actor="admin:test",
                                         request=TokenCreate(name=name, role=role))[1]


def test_client_round_trip(served: Served, database: Database) -> None:
    with database.transaction() as session:
        model = RegisteredModel(name="digits", created_by="test")
        session.add(model)
        session.flush()
        session.add(ModelVersion(model_id=model.id, version=1, created_by="test"))
        alert, _ = alerts.raise_alert(session=session, actor="system:monitor", request=AlertRaise(
            fingerprint="f", check=AlertCheck.LATENCY, severity=Severity.WARNING, title="slow", model_name="digits",
            model_version=1))
    agent = ControlPlaneClient(served.url, _token(database, "bot", Role.AGENT))
    approver = ControlPlaneClient(served.url, _token(database, "alice", Role.APPROVER))
    with agent, approver:
        incident = agent.list_incidents(state=[IncidentState.OPEN]).items[0]
        assert agent.get_incident(incident.id).alert_ids == [alert.id]
        start = agent.head()
        note = agent.post(incident.id, TriageNote.model_validate({
            "kind": "triage_note", "summary": "latency up", "evidence": [{"kind": "alert", "id": alert.id}]}))
        assert note.kind == "triage_note" and note.author == "agent:bot"
        with pytest.raises(ControlPlaneError) as refused:
            agent.post("inc_missing", Comment(kind="comment", text="x"))
        assert refused.value.status_code == 404 and refused.value.code == "not_found"

        proposal = agent.propose(ProposalCreate.model_validate({
            "action": {"kind": "retrain.request", "model": "digits", "version": 1,
                       "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-02T00:00:00Z"},
            "incident_id": incident.id, "expected_effect": "a fresher model", "risk": "low"}))
        assert [p.id for p in agent.list_proposals(state=[ProposalState.PENDING]).items] == [proposal.id]
        with pytest.raises(ControlPlaneError) as forbidden:
            agent.approve(proposal.id, "mine")
        assert forbidden.value.status_code == 403
        with pytest.raises(TimeoutError):  # nothing happens to it: the wait ends, keep-alive pings or not
            agent.wait_for_proposal(proposal.id, timeout_seconds=1)
        approver.approve(proposal.id, "fine")
        done = agent.wait_for_proposal(proposal.id, timeout_seconds=30)
        assert done.state == ProposalState.EXECUTED and done.result and "retrain_request_id" in done.result

        # The stream from before the note: every change since, in order, then resume after the third.
        seen = []
        for event in agent.events(after=start, read_timeout=10):
            seen.append(event)
            if event.action == "proposal.executed":
                break
        actions = [e.action for e in seen]
        assert actions[:3] == ["incident.triage_note", "proposal.create", "proposal.approved"]
        assert [e.seq for e in seen] == sorted(e.seq for e in seen) and agent.last_event_id == seen[-1].seq
        resumed = next(iter(agent.events(after=seen[2].seq, read_timeout=10)))
        assert resumed.seq == seen[3].seq
        only_proposals = next(iter(agent.events(after=start, resource_types=["proposal"], read_timeout=10)))
        assert only_proposals.action == "proposal.create"

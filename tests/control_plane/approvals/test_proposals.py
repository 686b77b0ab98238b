"""The approval queue: propose, four eyes, stale preconditions, expiry, execution, verification, bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.approvals import service
from control_plane.approvals.models import Proposal
from control_plane.audit.models import AuditEntry
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from tests.conftest import TokenFactory
from tests.control_plane.approvals.conftest import proposal_state, propose


def _incident(client: TestClient, database: Database, headers: dict[str, str]) -> str:
    request = AlertRaise(fingerprint="fp-digits", check=AlertCheck.ERROR_RATE, severity=Severity.CRITICAL,
                         title="error rate", model_name="digits", model_version=1)
    with database.transaction() as session:
        alerts.raise_alert(session=session, request=request, actor="system:monitor")
    return str(client.get("/api/v1/incidents", headers=headers).json()["items"][0]["id"])


def _actions(database: Database, resource_id: str) -> list[str]:
    with database.transaction(write=False) as session:
        return [e.action for e in session.scalars(select(AuditEntry).where(AuditEntry.resource_id == resource_id)
                                                  .order_by(AuditEntry.seq))]


def test_agent_proposal_is_approved_executed_once_and_verified(
        client: TestClient, database: Database, running_rollout: dict[str, Any], make_headers: TokenFactory) -> None:
    agent, approver = make_headers("agent", name="triage-bot"), make_headers("approver", name="alice")
    incident_id = _incident(client, database, agent)
    rollout_id = running_rollout["id"]
    proposal = propose(client, agent, {"kind": "rollout.pause", "rollout_id": rollout_id}, incident_id=incident_id,
                       evidence=[{"kind": "rollout", "id": rollout_id}], risk="low")
    assert proposal["state"] == "pending" and proposal["proposer"] == "agent:triage-bot"
    assert proposal["preconditions"]["rollout.state"] == "running"
    assert proposal["target_type"] == "rollout" and proposal["target_id"] == rollout_id

    url = f"/api/v1/proposals/{proposal['id']}"
    assert client.post(f"{url}/approve", json={"reason": "go"}, headers=agent).status_code == 403
    assert client.post(f"{url}/approve", json={"reason": " "}, headers=approver).status_code == 422
    approved = client.post(f"{url}/approve", json={"reason": "canary errors"}, headers=approver)
    assert approved.status_code == 200, approved.text
    done = proposal_state(client, agent, proposal["id"], "executed", "failed")
    assert done["state"] == "executed" and done["result"] == {"rollout_state": "paused"}, done
    assert client.get(f"/api/v1/fleet/rollouts/{rollout_id}", headers=agent).json()["state"] == "paused"
    again = client.post(f"{url}/approve", json={"reason": "twice"}, headers=make_headers("admin", name="bob"))
    assert again.status_code == 409

    verified = client.post(f"{url}/verification", json={"outcome": "recovered", "note": "errors stopped"},
                           headers=agent)
    assert verified.status_code == 200 and verified.json()["verification"] == "recovered"
    assert _actions(database, proposal["id"]) == ["proposal.create", "proposal.approved", "proposal.executing",
                                                  "proposal.executed", "proposal.verified"]
    assert _actions(database, rollout_id).count("rollout.paused") == 1
    timeline = client.get(f"/api/v1/incidents/{incident_id}/timeline", headers=agent).json()
    steps = [(e["kind"], e["body"].get("decision") or e["body"].get("status") or e["body"].get("outcome"))
             for e in timeline if e["kind"] != "alert_joined"]
    assert steps == [("proposal", None), ("decision", "approved"), ("execution", "started"),
                     ("execution", "executed"), ("verification", "recovered")]
    assert timeline[2]["author"] == "approver:alice"


def test_four_eyes_holds_across_tokens_of_one_principal(
        client: TestClient, running_rollout: dict[str, Any], make_headers: TokenFactory) -> None:
    alice_approver = make_headers("approver", name="alice")
    proposal = propose(client, alice_approver, {"kind": "rollout.abort", "rollout_id": running_rollout["id"]})
    url = f"/api/v1/proposals/{proposal['id']}"
    own = client.post(f"{url}/approve", json={"reason": "mine"}, headers=alice_approver)
    assert own.status_code == 403 and "four eyes" in own.json()["error"]["message"]
    alice_admin = make_headers("admin", name="alice")
    assert client.post(f"{url}/approve", json={"reason": "mine"}, headers=alice_admin).status_code == 403
    assert client.post(f"{url}/reject", json={"reason": "mine"}, headers=alice_admin).status_code == 403
    rejected = client.post(f"{url}/reject", json={"reason": "not needed"}, headers=make_headers("admin", name="bo"))
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert client.post(f"{url}/approve", json={"reason": "late"},
                       headers=make_headers("approver", name="cy")).status_code == 409


def test_stale_proposal_is_refused_naming_what_changed(
        client: TestClient, running_rollout: dict[str, Any], make_headers: TokenFactory) -> None:
    agent = make_headers("agent")
    proposal = propose(client, agent, {"kind": "rollout.pause", "rollout_id": running_rollout["id"]})
    paused = client.post(f"/api/v1/fleet/rollouts/{running_rollout['id']}/pause", json={"reason": "by hand"},
                         headers=make_headers("operator"))
    assert paused.status_code == 200
    stale = client.post(f"/api/v1/proposals/{proposal['id']}/approve", json={"reason": "go"},
                        headers=make_headers("approver", name="alice"))
    assert stale.status_code == 409
    assert stale.json()["error"]["details"]["changed"] == {"rollout.state": {"was": "running", "now": "paused"}}
    assert "rollout.state" in stale.json()["error"]["message"]


def test_expired_proposals(client: TestClient, database: Database, running_rollout: dict[str, Any],
                           make_headers: TokenFactory) -> None:
    agent, approver = make_headers("agent"), make_headers("approver", name="alice")
    proposal = propose(client, agent, {"kind": "rollout.pause", "rollout_id": running_rollout["id"]},
                       expires_in_seconds=60)
    with database.transaction() as session:
        session.execute(update(Proposal).values(expires_at=utcnow() - timedelta(seconds=1)))
    late = client.post(f"/api/v1/proposals/{proposal['id']}/approve", json={"reason": "go"}, headers=approver)
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
    with database.transaction() as session:
        assert service.expire_due(session=session) == 1
    assert client.get(f"/api/v1/proposals/{proposal['id']}", headers=agent).json()["state"] == "expired"
    assert client.post(f"/api/v1/proposals/{proposal['id']}/approve", json={"reason": "go"},
                       headers=approver).status_code == 409


def test_bad_input(client: TestClient, running_rollout: dict[str, Any], make_headers: TokenFactory) -> None:
    agent = make_headers("agent")

    def create(action: dict[str, Any], **body: Any) -> Any:
        return client.post("/api/v1/proposals", headers=agent,
                           json={"action": action, "expected_effect": "x", **body})

    unknown = create({"kind": "rollout.delete", "rollout_id": "ro_x"})
    assert unknown.status_code == 422 and "action" in unknown.json()["error"]["details"]["errors"][0]["field"]
    missing = create({"kind": "rollout.pause"})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["errors"][0]["field"] == "body.action.rollout.pause.rollout_id"
    bad_version = create({"kind": "prompt.label_move", "prompt": "p", "label": "production", "version": 0})
    assert bad_version.json()["error"]["details"]["errors"][0]["field"].endswith("version")
    assert create({"kind": "rollout.pause", "rollout_id": "ro_nope"}).status_code == 404
    assert create({"kind": "prompt.label_move", "prompt": "nope", "label": "production", "version": 3}
                  ).status_code == 404
    assert create({"kind": "device.quarantine", "device_id": "ghost"}).status_code == 404
    assert create({"kind": "rollout.pause", "rollout_id": running_rollout["id"]},
                  incident_id="inc_nope").status_code == 404
    assert create({"kind": "rollout.pause", "rollout_id": running_rollout["id"]},
                  evidence=[{"kind": "alert", "id": "al_nope"}]).status_code == 422
    retrain = {"kind": "retrain.request", "model": "digits", "version": 1, "window_start": "2026-01-02T00:00:00Z",
               "window_end": "2026-01-01T00:00:00Z"}
    assert "window_end" in create(retrain).text
    assert client.post("/api/v1/proposals", headers=make_headers("viewer"),
                       json={"action": {"kind": "rollout.pause", "rollout_id": running_rollout["id"]},
                             "expected_effect": "x"}).status_code == 403

    key = "incident-42-pause"
    first = create({"kind": "rollout.pause", "rollout_id": running_rollout["id"]}, idempotency_key=key)
    replay = create({"kind": "rollout.pause", "rollout_id": running_rollout["id"]}, idempotency_key=key)
    assert (first.status_code, replay.status_code) == (201, 200) and first.json()["id"] == replay.json()["id"]
    other = create({"kind": "rollout.abort", "rollout_id": running_rollout["id"]}, idempotency_key=key)
    assert other.status_code == 409


def test_quarantine_and_retrain(client: TestClient, database: Database, running_rollout: dict[str, Any],
                                make_headers: TokenFactory) -> None:
    agent, approver = make_headers("agent"), make_headers("approver", name="alice")
    quarantine = propose(client, agent, {"kind": "device.quarantine", "device_id": "dev-2"})
    retrain = propose(client, agent, {"kind": "retrain.request", "model": "digits", "version": 1,
                                      "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-02T00:00:00Z",
                                      "cohort": {"device_group": "g"}})
    for proposal in (quarantine, retrain):
        assert client.post(f"/api/v1/proposals/{proposal['id']}/approve", json={"reason": "ok"},
                           headers=approver).status_code == 200
        assert proposal_state(client, agent, proposal["id"], "executed", "failed")["state"] == "executed"
    assert [q["device_id"] for q in client.get("/api/v1/quarantines", headers=agent).json()] == ["dev-2"]
    requests = client.get("/api/v1/retrain-requests", headers=agent).json()
    assert len(requests) == 1 and requests[0]["cohort"] == {"device_group": "g"}
    targets = client.get(f"/api/v1/fleet/rollouts/{running_rollout['id']}/devices", headers=agent).json()
    assert {t["device_id"] for t in targets} == {"dev-1", "dev-2"}  # the device had its manifest already
    redeploy = client.post("/api/v1/fleet/deployments", headers=make_headers("operator"),
                           json={"model": "digits", "version": 1, "selector": {"group": "g"}})
    assert redeploy.status_code == 201
    new_targets = client.get(f"/api/v1/fleet/rollouts/{redeploy.json()['id']}/devices", headers=agent).json()
    assert [t["device_id"] for t in new_targets] == ["dev-1"]
    again = client.post("/api/v1/proposals", headers=agent, json={
        "action": {"kind": "device.quarantine", "device_id": "dev-2"}, "expected_effect": "x"})
    assert again.status_code == 409
    assert client.delete("/api/v1/quarantines/dev-2", headers=agent).status_code == 403
    assert client.delete("/api/v1/quarantines/dev-2", headers=approver).status_code == 204
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "device.quarantine")) == 1

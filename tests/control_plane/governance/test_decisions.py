"""Which model decided this? Lookups before and after activations and an approved rollback, and bad input."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from control_plane.db.base import utcnow
from control_plane.fleet import events
from control_plane.fleet.models import Device, Manifest
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import fleet_models  # noqa: F401 - fixture by name
from tests.control_plane.fleet.test_rollouts import Fleet, fleet  # noqa: F401 - fixture by name
from tests.control_plane.governance.conftest import MODEL, History


def _decision(history: History, headers: dict[str, str], at: datetime | str | None, **params: Any) -> Any:
    query = {**({"at": at if isinstance(at, str) else at.isoformat()} if at is not None else {}), **params}
    return history.client.get("/api/v1/fleet/devices/d0/decision", params=query, headers=headers)


def _ok(history: History, headers: dict[str, str], at: datetime) -> dict[str, Any]:
    response = _decision(history, headers, at)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _sha(history: History, artifact_id: str) -> str:
    version = history.client.get(f"/api/v1/artifacts/{artifact_id}", headers=history.headers).json()
    return str(version["sha256"])


def test_before_any_activation_no_model_is_recorded(history: History, make_headers: TokenFactory) -> None:
    record = _ok(history, make_headers("viewer"), history.provisioned_at)
    assert record["status"] == "none_recorded" and record["model"] is None and record["approvals"] == []
    assert "last accepted `activated` or `switched`" in record["rule"]


def test_each_activation_and_the_approved_rollback_answer_with_their_chain(
        history: History, make_headers: TokenFactory) -> None:
    viewer = make_headers("viewer")
    first = _ok(history, viewer, history.marks["v1_active"])
    assert (first["status"], first["model"], first["version"]) == ("active", MODEL, 1)
    assert first["artifact_id"] == history.v1.int8_artifact_id and first["quantization"] == "int8"
    assert first["artifact_sha256"] == _sha(history, history.v1.int8_artifact_id)
    assert first["rollout_id"] == history.deploy_v1["id"] and first["rollout_kind"] == "deploy"
    assert first["manifest_sequence"] == 1 and first["evidence"]["state"] == "activated"
    assert first["evidence"]["sequence"] == 1 and first["evidence"]["rollout_id"] == history.deploy_v1["id"]
    assert [(s["step"], s["actor"]) for s in first["approvals"]] == [("deployment.create", "operator:ops"),
                                                                   ("rollout.create", "operator:ops")]
    assert all(s["audit_seq"] > 0 for s in first["approvals"])

    second = _ok(history, viewer, history.marks["v2_active"])
    assert second["version"] == 2 and second["manifest_sequence"] == 2
    assert second["rollout_id"] == history.deploy_v2["id"]
    # After the approval but before the device confirmed the rollback manifest, it still ran v2.
    pending = _ok(history, viewer, history.marks["rollback_decided"])
    assert pending["version"] == 2 and pending["rollout_state"] == "rolled_back"

    back = _ok(history, viewer, history.marks["v1_restored"])
    assert back["version"] == 1 and back["artifact_id"] == history.v1.int8_artifact_id
    assert back["rollout_id"] == history.rollback_id and back["rollout_kind"] == "rollback"
    assert back["rollback_of"] == history.deploy_v2["id"] and back["manifest_sequence"] == 3
    steps = [(s["step"], s["actor"], s["proposal_id"]) for s in back["approvals"]]
    assert steps == [
        ("deployment.create", "operator:ops", None),
        ("proposal.create", "agent:triage-bot", history.proposal_id),
        ("proposal.approved", "approver:alice", history.proposal_id),
        ("proposal.executing", "system:approval-executor", history.proposal_id),
        ("rollout.create", "approver:alice", None),
        ("proposal.executed", "system:approval-executor", history.proposal_id),
    ]
    approved = next(s for s in back["approvals"] if s["step"] == "proposal.approved")
    assert approved["reason"] == "v2 drifts on alcohol; back to v1"
    assert back["caveats"] == [f"rollout {history.rollback_id} rolls back {history.deploy_v2['id']}: its "
                               "deployment.create step is that of the deployment it rolled back, not a decision to "
                               "run this version"]
    assert first["caveats"] == [] and second["caveats"] == []
    seqs = [s["audit_seq"] for s in back["approvals"]]
    assert seqs == sorted(seqs)

    markdown = _decision(history, viewer, history.marks["v1_restored"], format="markdown")
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "## Chain of approvals" in markdown.text and "approver:alice" in markdown.text


def test_a_reverted_trial_and_an_unattributable_report_are_skipped(history: History, make_headers: TokenFactory
                                                                   ) -> None:
    with history.database.transaction(write=False) as session:
        manifest = session.scalar(select(Manifest).where(Manifest.device_id == "d0")
                                  .order_by(Manifest.sequence.desc()).limit(1))
        assert manifest is not None
        rollout_id, sequence = manifest.rollout_id, manifest.sequence

    def report(**fields: Any) -> None:
        body = {"schema": "edgeloop.status/v1", "event_id": str(uuid.uuid4()), "device_id": "d0", "reason": None,
                "model": None, "slot": "b", "ts": 1.0, **fields}
        with history.database.transaction() as session:
            assert events.apply_message(session, "edgeloop/devices/d0/status", json.dumps(body).encode()).accepted

    report(state="reverted", rollout_id=rollout_id, sequence=sequence)
    report(state="activated", rollout_id=None, sequence=None)
    record = _ok(history, make_headers("viewer"), utcnow())
    assert record["version"] == 2 and record["rollout_id"] == history.deploy_v2["id"]  # the activation before
    assert len(record["caveats"]) == 2
    assert "names no manifest" in record["caveats"][0] and "`reverted`" in record["caveats"][1]


def test_errors_unknown_device_naive_future_before_provisioning_and_numbers(
        history: History, make_headers: TokenFactory) -> None:
    viewer = make_headers("viewer")
    unknown = history.client.get("/api/v1/fleet/devices/nope/decision", headers=viewer)
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "device 'nope' not found"
    naive = _decision(history, viewer, "2026-01-31T12:00:00")
    assert naive.status_code == 422 and "time zone" in naive.json()["error"]["message"]
    future = _decision(history, viewer, utcnow() + timedelta(hours=1))
    assert future.status_code == 422 and "in the future" in future.json()["error"]["message"]
    with history.database.transaction(write=False) as session:
        created = session.get(Device, "d0").created_at  # type: ignore[union-attr]
    early = _decision(history, viewer, created - timedelta(seconds=1))
    assert early.status_code == 422 and "did not exist" in early.json()["error"]["message"]
    assert _decision(history, viewer, "1700000000").status_code == 422
    assert _decision(history, viewer, "yesterday").status_code == 422
    assert history.client.get("/api/v1/fleet/devices/d0/decision").status_code == 401
    device = make_headers("device", name="dev", device_id="d0")
    assert _decision(history, device, None).status_code == 403


@pytest.mark.parametrize("role", ["viewer", "agent", "operator"])
def test_readers_may_look_up_decisions(history: History, make_headers: TokenFactory, role: str) -> None:
    assert _decision(history, make_headers(role), None).json()["version"] == 1


def test_blue_green_switch_reports_name_the_cutover_target(fleet: Fleet) -> None:  # noqa: F811
    def decided() -> dict[str, Any]:
        response = fleet.client.get("/api/v1/fleet/devices/d0/decision", headers=fleet.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def switched(rollout_id: str, sequence: int) -> None:
        body = {"schema": "edgeloop.status/v1", "event_id": str(uuid.uuid4()), "device_id": "d0",
                "rollout_id": rollout_id, "sequence": sequence, "state": "switched", "reason": None,
                "model": None, "slot": "b", "ts": 2.0}
        with fleet.database.transaction() as session:
            assert events.apply_message(session, "edgeloop/devices/d0/status", json.dumps(body).encode()).accepted

    fleet.deploy(1, ["d0"])
    fleet.report("d0", "activated")
    v1_int8 = decided()["artifact_id"]
    staged = fleet.deploy(2, ["d0"], kind="blue_green")["id"]
    fleet.report("d0", "staged")
    assert decided()["version"] == 1  # staged is not serving
    url = f"/api/v1/fleet/rollouts/{staged}/cutover"
    assert fleet.client.post(url, json={"to": "new"}, headers=fleet.headers).status_code == 202
    switched(staged, 1)
    new = decided()
    assert (new["version"], new["rollout_id"], new["cutover_sequence"]) == (2, staged, 1)
    assert new["manifest_sequence"] == fleet.latest("d0").sequence and new["evidence"]["state"] == "switched"
    assert fleet.client.post(url, json={"to": "old"}, headers=fleet.headers).status_code == 202
    switched(staged, 2)
    old = decided()
    assert (old["version"], old["artifact_id"], old["cutover_sequence"]) == (1, v1_int8, 2)

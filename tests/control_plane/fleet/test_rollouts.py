"""Deployments and the rollout engine: waves, health gates, pause/resume, rollback, sequences, audit, lineage."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.fleet import events, rollouts, service
from control_plane.fleet.manifests import ManifestFactory, decode_outputs, factory_for
from control_plane.fleet.models import Manifest
from control_plane.fleet.schemas import DeviceCreate, Strategy, StrategyKind
from control_plane.registry import onnx_tools
from control_plane.signing import verify_signature
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import FleetModels, register

# Engine logic with no engine-specific SQL: SQLite is enough (the locking paths run on both engines elsewhere).
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.mark.parametrize(("strategy", "total", "plan"), [
    (Strategy(), 7, [7]),
    (Strategy(kind=StrategyKind.WAVES, waves=[1, 10, 50, 100]), 200, [2, 20, 100, 200]),
    (Strategy(kind=StrategyKind.WAVES, waves=[1, 10, 50, 100]), 4, [1, 2, 4]),
    (Strategy(kind=StrategyKind.WAVES, waves=[50, 100]), 1, [1]),
    (Strategy(kind=StrategyKind.EXPONENTIAL, base_count=1, increment_factor=2), 10, [1, 3, 7, 10]),
    (Strategy(kind=StrategyKind.EXPONENTIAL, base_count=5, increment_factor=3), 100, [5, 20, 65, 100]),
])
def test_wave_plan(strategy: Strategy, total: int, plan: list[int]) -> None:
    assert rollouts.wave_plan(strategy, total) == plan


def _status(device_id: str, manifest: Manifest | None, state: str, reason: str | None = None,
            event_id: str | None = None) -> tuple[str, bytes]:
    body = {"schema": "edgeloop.status/v1", "event_id": event_id or str(uuid.uuid4()), "device_id": device_id,
            "rollout_id": manifest.rollout_id if manifest else None,
            "sequence": manifest.sequence if manifest else None, "state": state, "reason": reason,
            "model": None, "slot": "a", "ts": 1.0}
    return f"edgeloop/devices/{device_id}/status", json.dumps(body).encode()


class Fleet:
    """Drive the engine the way the bridge does: apply device events, then step."""

    def __init__(self, client: TestClient, database: Database, headers: dict[str, str]) -> None:
        self.client, self.database, self.headers = client, database, headers
        self.factory: ManifestFactory = factory_for(client.app.state)  # type: ignore[attr-defined]

    def deploy(self, version: int, devices: list[str], **strategy: Any) -> dict[str, Any]:
        response = self.client.post("/api/v1/fleet/deployments", headers=self.headers, json={
            "model": "digits", "version": version, "selector": {"device_ids": devices}, "strategy": strategy})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def latest(self, device_id: str) -> Manifest:
        with self.database.transaction(write=False) as session:
            manifest = session.scalar(select(Manifest).where(Manifest.device_id == device_id)
                                      .order_by(Manifest.sequence.desc()).limit(1))
            assert manifest is not None
            return manifest

    def report(self, device_id: str, state: str, reason: str | None = None) -> None:
        manifest = self.latest(device_id)
        with self.database.transaction() as session:
            outcome = events.apply_message(session, *_status(device_id, manifest, state, reason))
            assert outcome.accepted and outcome.rollout_id == manifest.rollout_id
            rollouts.step(session, self.factory, manifest.rollout_id or "")

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/fleet/rollouts/{rollout_id}", headers=self.headers).json())

    def targets(self, rollout_id: str) -> dict[str, str]:
        rows = self.client.get(f"/api/v1/fleet/rollouts/{rollout_id}/devices", headers=self.headers).json()
        return {row["device_id"]: row["state"] for row in rows}


@pytest.fixture
def fleet(client: TestClient, database: Database, operator_headers: dict[str, str],
          fleet_models: FleetModels) -> Fleet:
    register(client, operator_headers, "digits", 1, [(fleet_models.v1_fp32, "fp32"), (fleet_models.v1_int8, "int8")])
    register(client, operator_headers, "digits", 2, [(fleet_models.v2_int8, "int8")])
    with database.transaction() as session:  # One transaction: the API path is covered in test_devices_api.
        for index in range(4):
            service.provision_device(session=session, request=DeviceCreate(id=f"d{index}", group="lab"),
                                     actor="operator:test")
    return Fleet(client, database, operator_headers)


def test_deploy_issues_signed_int8_manifest_with_self_test_from_the_artifact(
        fleet: Fleet, fleet_models: FleetModels, operator_headers: dict[str, str],
        admin_headers: dict[str, str]) -> None:
    client = fleet.client
    client.put("/api/v1/models/digits/aliases/candidate", json={"version": 2}, headers=operator_headers)
    response = client.post("/api/v1/fleet/deployments", headers=operator_headers, json={
        "model": "digits", "alias": "candidate", "selector": {"group": "lab"},
        "strategy": {"kind": "waves", "waves": [25, 50, 100]}})
    assert response.status_code == 201, response.text
    rollout = response.json()
    assert rollout["state"] == "in_progress" and rollout["wave_plan"] == [1, 2, 4]
    assert rollout["model"] == {"name": "digits", "version": 2} and rollout["progress"]["issued"] == 1

    envelope = client.get("/api/v1/fleet/devices/d0/manifest", headers=operator_headers).json()
    payload = base64.b64decode(envelope["payload"])
    assert verify_signature(fleet.factory.signer.public_raw, base64.b64decode(envelope["signature"]), payload)
    assert envelope["key_id"] == fleet.factory.signer.key_id
    manifest = json.loads(payload)
    sha = manifest["artifact"]["sha256"]
    assert manifest["schema"] == "edgeloop.manifest/v1" and manifest["device_id"] == "d0"
    assert manifest["sequence"] == 1 and manifest["rollout_id"] == rollout["id"]
    assert manifest["artifact"]["quantization"] == "int8" and manifest["artifact"]["size"] == len(fleet_models.v2_int8)
    assert manifest["artifact"]["url"] == f"http://127.0.0.1:8000/api/v1/artifacts/sha256/{sha}"
    assert manifest["expires_at"] - manifest["issued_at"] == 86_400
    assert manifest["input_schema"] == {"name": "input", "dtype": "float32", "shape": [None, 64]}
    # The expected answers are what the exact int8 artifact computes on the self-test rows.
    test = manifest["self_test"]
    labels, scores = decode_outputs(onnx_tools.make_session(fleet_models.v2_int8).run(
        None, {"input": np.asarray(test["inputs"], dtype=np.float32)}))
    assert test["expected_labels"] == labels.tolist() and len(test["inputs"]) == 8
    assert scores is not None and np.allclose(test["expected_scores"], scores, atol=1e-5)
    assert client.get("/api/v1/fleet/devices/d1/manifest", headers=operator_headers).status_code == 404

    # Devices download only artifacts their own manifests name.
    d0 = client.post("/api/v1/fleet/devices/d0/token", headers=admin_headers).json()["token"]
    d1 = client.post("/api/v1/fleet/devices/d1/token", headers=admin_headers).json()["token"]
    url = f"/api/v1/artifacts/sha256/{sha}"
    assert client.get(url, headers={"Authorization": f"Bearer {d0}"}).content == fleet_models.v2_int8
    assert client.get(url, headers={"Authorization": f"Bearer {d1}"}).status_code == 403


def test_waves_advance_on_activation_to_success_with_audit_and_lineage(
        fleet: Fleet, admin_headers: dict[str, str]) -> None:
    rollout = fleet.deploy(1, ["d0", "d1", "d2", "d3"], kind="waves", waves=[25, 50, 100])
    rollout_id = rollout["id"]
    fleet.report("d0", "received")
    fleet.report("d0", "downloading")
    assert fleet.targets(rollout_id) == {"d0": "downloading", "d1": "pending", "d2": "pending", "d3": "pending"}
    fleet.report("d0", "activated")
    assert fleet.targets(rollout_id)["d1"] == "issued" and fleet.rollout(rollout_id)["current_wave"] == 1
    fleet.report("d1", "activated")
    assert {fleet.targets(rollout_id)[d] for d in ("d2", "d3")} == {"issued"}
    fleet.report("d2", "activated")
    assert fleet.rollout(rollout_id)["state"] == "in_progress"
    fleet.report("d3", "activated")
    done = fleet.rollout(rollout_id)
    assert done["state"] == "succeeded" and done["progress"]["succeeded"] == 4 and done["finished_at"]
    device = fleet.client.get("/api/v1/fleet/devices/d3", headers=fleet.headers).json()
    assert device["reported"]["state"] == "activated" and device["desired"]["rollout_id"] == rollout_id
    assert device["reported"]["active_artifact_id"] == device["desired"]["artifact_id"]

    audit = fleet.client.get("/api/v1/audit/entries", params={"resource_id": rollout_id, "limit": 50},
                             headers=admin_headers).json()
    actions = [e["action"] for e in audit]
    assert actions == ["rollout.create", "rollout.in_progress", "rollout.wave_started", "rollout.wave_started",
                       "rollout.wave_started", "rollout.succeeded"]
    graph = fleet.client.get(f"/api/v1/lineage/rollout/{rollout_id}", params={"direction": "upstream"},
                             headers=admin_headers).json()
    relations = {e["relation"] for e in graph["edges"]}
    assert {"executed_by", "deployed_as", "packaged_as"} <= relations


def test_health_gate_aborts_and_cancels_remaining_waves(fleet: Fleet) -> None:
    rollout_id = fleet.deploy(1, ["d0", "d1", "d2", "d3"], kind="waves", waves=[50, 100],
                              failure_threshold=0.4, min_finished=2)["id"]
    fleet.report("d0", "failed", "self_test_failed")
    assert fleet.rollout(rollout_id)["state"] == "in_progress"  # one finished device is below min_finished
    fleet.report("d1", "failed", "latency_exceeded")
    aborted = fleet.rollout(rollout_id)
    assert aborted["state"] == "aborted" and "2 of 2" in aborted["reason"]
    assert fleet.targets(rollout_id) == {"d0": "failed", "d1": "failed", "d2": "cancelled", "d3": "cancelled"}
    with fleet.database.transaction(write=False) as session:
        assert session.scalar(select(Manifest).where(Manifest.device_id == "d2")) is None


@SQLITE_ONLY
def test_wave_timeout_counts_as_failure(fleet: Fleet) -> None:
    rollout_id = fleet.deploy(1, ["d0", "d1"], kind="waves", waves=[50, 100], wave_timeout_s=30,
                              failure_threshold=0.0)["id"]
    with fleet.database.transaction() as session:
        rollouts.step(session, fleet.factory, rollout_id, utcnow() + timedelta(seconds=10))
    assert fleet.rollout(rollout_id)["state"] == "in_progress"
    with fleet.database.transaction() as session:
        rollouts.step(session, fleet.factory, rollout_id, utcnow() + timedelta(seconds=31))
    assert fleet.rollout(rollout_id)["state"] == "aborted"
    assert fleet.targets(rollout_id) == {"d0": "timed_out", "d1": "cancelled"}


def test_pause_holds_the_next_wave_until_resume(fleet: Fleet, admin_headers: dict[str, str]) -> None:
    rollout_id = fleet.deploy(1, ["d0", "d1"], kind="waves", waves=[50, 100])["id"]
    paused = fleet.client.post(f"/api/v1/fleet/rollouts/{rollout_id}/pause", json={"reason": "drift"},
                               headers=fleet.headers)
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    fleet.report("d0", "activated")
    assert fleet.targets(rollout_id) == {"d0": "activated", "d1": "pending"}
    again = fleet.client.post(f"/api/v1/fleet/rollouts/{rollout_id}/pause", json={}, headers=fleet.headers)
    assert again.status_code == 409
    resumed = fleet.client.post(f"/api/v1/fleet/rollouts/{rollout_id}/resume", json={}, headers=fleet.headers)
    assert resumed.json()["state"] == "in_progress" and fleet.targets(rollout_id)["d1"] == "issued"
    aborted = fleet.client.post(f"/api/v1/fleet/rollouts/{rollout_id}/abort", json={"reason": "stop"},
                                headers=fleet.headers)
    assert aborted.json()["state"] == "aborted" and aborted.json()["reason"] == "stop"
    actions = [e["action"] for e in fleet.client.get("/api/v1/audit/entries", headers=admin_headers, params={
        "resource_id": rollout_id, "limit": 50}).json()]
    assert actions[-4:] == ["rollout.paused", "rollout.in_progress", "rollout.wave_started", "rollout.aborted"]


def test_rollback_returns_devices_to_the_previous_artifact_with_higher_sequences(
        fleet: Fleet, make_headers: TokenFactory) -> None:
    first = fleet.deploy(1, ["d0", "d1"])["id"]
    for device in ("d0", "d1"):
        fleet.report(device, "activated")
    v1_sha = fleet.rollout(first)["artifact_sha256"]
    second = fleet.deploy(2, ["d0", "d1"])["id"]
    fleet.report("d0", "activated")
    fleet.report("d1", "downloading")
    sequences = {d: fleet.latest(d).sequence for d in ("d0", "d1")}

    denied = fleet.client.post(f"/api/v1/fleet/rollouts/{second}/rollback", json={}, headers=fleet.headers)
    assert denied.status_code == 403  # rolling back is an approver's decision
    for kind in ("blue_green", "shadow"):  # a rollback has one version and no staging: plain or waved only
        staged = fleet.client.post(f"/api/v1/fleet/rollouts/{second}/rollback",
                                   json={"strategy": {"kind": kind}}, headers=make_headers("approver"))
        assert staged.status_code == 422 and "rollback rolls out in one go or in waves" in staged.text
    assert fleet.rollout(second)["state"] != "rolled_back"
    response = fleet.client.post(f"/api/v1/fleet/rollouts/{second}/rollback", json={"reason": "accuracy"},
                                 headers=make_headers("approver"))
    assert response.status_code == 201, response.text
    back = response.json()
    assert back["kind"] == "rollback" and back["rollback_of"] == second and back["artifact_sha256"] == v1_sha
    assert back["model"]["version"] == 1 and back["state"] == "in_progress"
    assert fleet.rollout(second)["state"] == "rolled_back"
    for device in ("d0", "d1"):
        manifest = fleet.latest(device)
        assert manifest.sequence == sequences[device] + 1 and manifest.artifact_sha256 == v1_sha
        assert manifest.rollout_id == back["id"]
        fleet.report(device, "activated")
    assert fleet.rollout(back["id"])["state"] == "succeeded"
    assert fleet.rollout(first)["state"] == "succeeded"
    again = fleet.client.post(f"/api/v1/fleet/rollouts/{second}/rollback", json={}, headers=make_headers("admin"))
    assert again.status_code == 409


@SQLITE_ONLY
def test_a_newer_deployment_supersedes_open_targets(fleet: Fleet) -> None:
    first = fleet.deploy(1, ["d0", "d1"], kind="waves", waves=[50, 100])["id"]
    second = fleet.deploy(2, ["d0", "d1"])["id"]
    assert fleet.targets(first) == {"d0": "cancelled", "d1": "cancelled"}
    assert fleet.targets(second) == {"d0": "issued", "d1": "issued"}
    assert fleet.latest("d0").sequence == 2 and fleet.latest("d1").sequence == 1
    with fleet.database.transaction() as session:
        rollouts.step(session, fleet.factory, first)
    superseded = fleet.rollout(first)
    assert superseded["state"] == "aborted" and superseded["reason"] == "superseded by newer rollouts"


def test_sequence_is_monotonic_under_concurrency(fleet: Fleet) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def bump() -> None:
        for _ in range(5):
            with fleet.database.transaction() as session:
                _, sequence = rollouts.next_sequence(session, "d0")
            with lock:
                got.append(sequence)

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 31))


@SQLITE_ONLY
def test_malformed_and_duplicate_events_are_stored_not_raised(fleet: Fleet) -> None:
    fleet.deploy(1, ["d0"])
    manifest = fleet.latest("d0")
    topic, good = _status("d0", manifest, "received", event_id="evt-1")
    bad = [
        (topic, b"{not json"),
        (topic, b"[1, 2]"),
        (topic, json.dumps({"schema": "other"}).encode()),
        ("edgeloop/devices/d1/status", good),  # payload names d0
        ("edgeloop/devices/ghost/status", good.replace(b'"d0"', b'"ghost"')),
        (topic, good.replace(b'"received"', b'"exploded"')),
        ("edgeloop/devices/d0/presence", b'{"schema": "edgeloop.presence/v1", "device_id": "d0", "online": 1}'),
    ]
    with fleet.database.transaction() as session:
        outcomes = [events.apply_message(session, t, p) for t, p in bad]
        first = events.apply_message(session, topic, good)
        duplicate = events.apply_message(session, topic, good)
    assert [o.accepted for o in outcomes] == [False] * len(bad)
    assert first.accepted and not first.duplicate and duplicate.duplicate
    stored = fleet.client.get("/api/v1/fleet/events", params={"accepted": False}, headers=fleet.headers).json()
    reasons = {e["reason"] for e in stored}
    assert {"payload is not JSON", "payload is not a JSON object", "unknown device",
            "device_id differs from the topic's device", "unknown state 'exploded'",
            "online must be a boolean"} <= reasons
    assert len(fleet.client.get("/api/v1/fleet/devices/d0/events", headers=fleet.headers).json()) >= 2

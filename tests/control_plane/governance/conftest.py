"""A governed model's history, built through the real services: two registered versions with lineage, two
deployments activated on two devices, a drift alert and incident, and an approved rollback that devices confirm."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.fleet import events, rollouts
from control_plane.fleet.manifests import factory_for
from control_plane.fleet.models import Manifest
from control_plane.registry import pipeline
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from tests.conftest import TokenFactory
from tests.control_plane.approvals.conftest import proposal_state, propose
from tests.control_plane.fleet.conftest import provision
from tests.control_plane.fleet.test_rollouts import _status

MODEL = "wine-mlp"
HOSTILE = "<script>alert(1)</script> [click](javascript:alert(2)) *bold* | cell\n# heading"
DEVICES = ("d0", "d1")
GROUPS = ("north", "south")


@dataclass
class History:
    """What the scenario created, and control-plane times between its steps."""

    client: TestClient
    database: Database
    v1: pipeline.PipelineResult
    v2: pipeline.PipelineResult
    deploy_v1: dict[str, Any]
    deploy_v2: dict[str, Any]
    rollback_id: str
    proposal_id: str
    incident_id: str
    provisioned_at: datetime
    headers: dict[str, str]
    marks: dict[str, datetime] = field(default_factory=dict)


@pytest.fixture(scope="module")
def trained() -> tuple[pipeline.TrainingData, Any, Any]:
    from sklearn.exceptions import ConvergenceWarning

    data = pipeline.load_sklearn_dataset("wine")  # small: both models train well under a second
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return data, pipeline.train_mlp(data, hidden=(32,), seed=0), pipeline.train_mlp(data, hidden=(32,), seed=1)


def activate(client: TestClient, database: Database, device_id: str) -> None:
    """Report `activated` for the device's newest manifest through the ingest path, then step its rollout."""
    with database.transaction(write=False) as session:
        manifest = session.scalar(select(Manifest).where(Manifest.device_id == device_id)
                                  .order_by(Manifest.sequence.desc()).limit(1))
        assert manifest is not None
        session.expunge(manifest)
    with database.transaction() as session:
        outcome = events.apply_message(session, *_status(device_id, manifest, "activated"))
        assert outcome.accepted and outcome.rollout_id == manifest.rollout_id
        rollouts.step(session, factory_for(client.app.state), manifest.rollout_id or "")  # type: ignore[attr-defined]


def _deploy(client: TestClient, headers: dict[str, str], version: int) -> dict[str, Any]:
    response = client.post("/api/v1/fleet/deployments", headers=headers, json={
        "model": MODEL, "version": version, "selector": {"device_ids": list(DEVICES)}})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def history(client: TestClient, database: Database, settings: Settings, make_headers: TokenFactory,
            trained: tuple[pipeline.TrainingData, Any, Any]) -> History:
    data, first, second = trained
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    registered = []
    for estimator in (first, second):
        with database.transaction() as session:
            registered.append(pipeline.register_quantized_model(
                session=session, store=store, actor="operator:ml", model_name=MODEL, data=data, estimator=estimator,
                params={"hidden": [32]}, code_commit="abc123"))
    operator = make_headers("operator", name="ops")
    patched = client.patch(f"/api/v1/models/{MODEL}", headers=operator, json={
        "description": HOSTILE, "tags": {"limitations": ["not validated on wines outside the training region"]}})
    assert patched.status_code == 200, patched.text
    for device, group in zip(DEVICES, GROUPS, strict=True):
        provision(client, operator, device, group=group)
    provisioned_at = utcnow()
    marks: dict[str, datetime] = {}
    deploy_v1 = _deploy(client, operator, 1)
    for device in DEVICES:
        activate(client, database, device)
    marks["v1_active"] = utcnow()
    deploy_v2 = _deploy(client, operator, 2)
    for device in DEVICES:
        activate(client, database, device)
    marks["v2_active"] = utcnow()

    with database.transaction() as session:
        alerts.raise_alert(session=session, actor="system:monitor", request=AlertRaise(
            fingerprint="wine-drift-alcohol", check=AlertCheck.FEATURE_DRIFT, severity=Severity.CRITICAL,
            title="alcohol drifted", model_name=MODEL, model_version=2, rollout_id=deploy_v2["id"],
            feature="alcohol", evidence={"cohort": {"device_group": "north"}}))
    agent, approver = make_headers("agent", name="triage-bot"), make_headers("approver", name="alice")
    incident_id = str(client.get("/api/v1/incidents", headers=agent).json()["items"][0]["id"])
    proposal = propose(client, agent, {"kind": "rollout.rollback", "rollout_id": deploy_v2["id"]},
                       incident_id=incident_id, risk="medium")
    approved = client.post(f"/api/v1/proposals/{proposal['id']}/approve", headers=approver,
                           json={"reason": "v2 drifts on alcohol; back to v1"})
    assert approved.status_code == 200, approved.text
    executed = proposal_state(client, agent, proposal["id"], "executed", "failed")
    assert executed["state"] == "executed", executed
    marks["rollback_decided"] = utcnow()
    for device in DEVICES:
        activate(client, database, device)
    marks["v1_restored"] = utcnow()
    return History(client, database, registered[0], registered[1], deploy_v1, deploy_v2,
                   executed["result"]["rollback_rollout_id"], proposal["id"], incident_id, provisioned_at, operator,
                   marks)

"""Audit routes: every mutation is recorded; verify, export and checkpoints over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text


def test_mutations_are_audited_and_verifiable(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/v1/models", json={"name": "audited"}, headers=admin_headers)
    client.post("/api/v1/models/audited/versions", json={}, headers=admin_headers)
    client.put("/api/v1/models/audited/aliases/production", json={"version": 1}, headers=admin_headers)
    entries = client.get("/api/v1/audit/entries", headers=admin_headers).json()
    actions = [e["action"] for e in entries]
    # The fixture's token creation is audited too.
    assert actions == ["token.create", "model.create", "model_version.create", "model_alias.set"]
    assert entries[-1]["data"]["to_version"] == 1 and entries[-1]["actor"] == "admin:test-admin"

    filtered = client.get("/api/v1/audit/entries", params={"action": "model.create"}, headers=admin_headers)
    assert [e["action"] for e in filtered.json()] == ["model.create"]

    checkpoint = client.post("/api/v1/audit/checkpoints", headers=admin_headers)
    assert checkpoint.status_code == 201 and checkpoint.json()["seq"] == 4
    assert client.post("/api/v1/audit/checkpoints", headers=admin_headers).status_code == 409

    report = client.get("/api/v1/audit/verify", headers=admin_headers).json()
    assert report["ok"] and report["entries"] == 4 and report["checkpoints_verified"] == 1

    export = client.get("/api/v1/audit/export", headers=admin_headers)
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert len(export.text.strip().splitlines()) == 4


def test_failed_request_leaves_no_audit_entry(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/v1/models", json={"name": "once"}, headers=admin_headers)
    assert client.post("/api/v1/models", json={"name": "once"}, headers=admin_headers).status_code == 409
    actions = [e["action"] for e in client.get("/api/v1/audit/entries", headers=admin_headers).json()]
    assert actions.count("model.create") == 1


def test_checkpointing_needs_admin(client: TestClient, operator_headers: dict[str, str]) -> None:
    assert client.post("/api/v1/audit/checkpoints", headers=operator_headers).status_code == 403
    key = client.get("/api/v1/audit/public-key", headers=operator_headers).json()
    assert len(key["key_id"]) == 16


def test_verify_against_the_replicas_checkpoint_file(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/v1/models", json={"name": "kept"}, headers=admin_headers)
    assert client.post("/api/v1/audit/checkpoints", headers=admin_headers).status_code == 201
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.transaction() as session:
        session.execute(text("DELETE FROM audit_checkpoints"))
    assert client.get("/api/v1/audit/verify", headers=admin_headers).json()["ok"]
    report = client.get("/api/v1/audit/verify", params={"against_checkpoint_file": True}, headers=admin_headers)
    assert not report.json()["ok"] and "missing from the database" in report.json()["reason"]

"""Tokens: shown once, hashed at rest, revocable, expiring, role- and device-scoped."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import text

from control_plane.auth.models import ApiToken
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from tests.conftest import TokenFactory


def test_token_lifecycle(client: TestClient, admin_headers: dict[str, str], database: Database) -> None:
    created = client.post("/api/v1/tokens", json={"name": "alice", "role": "operator"}, headers=admin_headers)
    assert created.status_code == 201
    secret = created.json()["token"]
    with database.transaction(write=False) as session:
        stored = session.execute(text("SELECT secret_sha256 FROM api_tokens WHERE name = 'alice'")).scalar_one()
    assert secret.split("_", 2)[2] not in stored  # only a hash is stored

    alice = {"Authorization": f"Bearer {secret}"}
    who = client.get("/api/v1/whoami", headers=alice).json()
    assert who["role"] == "operator" and "approve" not in who["scopes"]
    assert all("token" not in t for t in client.get("/api/v1/tokens", headers=admin_headers).json())

    revoked = client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    denied = client.get("/api/v1/whoami", headers=alice)
    assert denied.status_code == 401 and denied.json()["error"]["message"] == "token revoked"


def test_expired_token_is_refused(client: TestClient, make_headers: TokenFactory, database: Database) -> None:
    headers = make_headers("viewer", name="old")
    with database.transaction() as session:
        token = session.query(ApiToken).filter_by(name="old").one()
        token.expires_at = utcnow() - timedelta(seconds=1)
    response = client.get("/api/v1/whoami", headers=headers)
    assert response.status_code == 401 and response.json()["error"]["message"] == "token expired"


def test_roles_are_least_privilege(client: TestClient, make_headers: TokenFactory) -> None:
    agent = make_headers("agent")
    device = make_headers("device", device_id="dev-1")
    assert client.get("/api/v1/models", headers=agent).status_code == 200
    assert client.post("/api/v1/models", json={"name": "x"}, headers=agent).status_code == 403
    assert client.get("/api/v1/models", headers=device).status_code == 403
    assert client.post("/api/v1/tokens", json={"name": "n", "role": "admin"}, headers=agent).status_code == 403
    assert client.get("/api/v1/whoami", headers=device).json()["device_id"] == "dev-1"


def test_device_role_requires_a_device_id(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/tokens", json={"name": "d", "role": "device"}, headers=admin_headers)
    assert response.status_code == 422
    other = client.post("/api/v1/tokens", json={"name": "o", "role": "viewer", "device_id": "x"},
                        headers=admin_headers)
    assert other.status_code == 422


def test_revocation_applies_to_writes_at_once(client: TestClient, admin_headers: dict[str, str]) -> None:
    # Writes authenticate on a separate read connection on SQLite: it must see the revocation as reads do.
    created = client.post("/api/v1/tokens", json={"name": "bob", "role": "operator"}, headers=admin_headers).json()
    bob = {"Authorization": f"Bearer {created['token']}"}
    assert client.post("/api/v1/models", json={"name": "before"}, headers=bob).status_code == 201
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=admin_headers).status_code == 200
    denied = client.post("/api/v1/models", json={"name": "after"}, headers=bob)
    assert denied.status_code == 401 and denied.json()["error"]["message"] == "token revoked"
    assert client.get("/api/v1/models/after", headers=admin_headers).status_code == 404


def test_wrong_secret_is_refused_on_writes(client: TestClient, operator_headers: dict[str, str]) -> None:
    forged = operator_headers["Authorization"][:-4] + "AAAA"
    response = client.post("/api/v1/models", json={"name": "x"}, headers={"Authorization": forged})
    assert response.status_code == 401 and response.json()["error"]["message"] == "invalid token"

"""Device provisioning, selectors and device-token scoping, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from control_plane.db.session import Database
from control_plane.fleet import service
from control_plane.fleet.schemas import Selector
from control_plane.signing import key_id_of
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import provision


def test_provision_returns_scoped_token_key_and_broker(client: TestClient, operator_headers: dict[str, str],
                                                       admin_headers: dict[str, str]) -> None:
    body = provision(client, operator_headers, "dev-1", group="lab", labels={"site": "paris"})
    assert body["token"].startswith("elp_") and body["topic_prefix"] == "edgeloop/devices/dev-1/"
    assert body["control_plane_url"] == "http://127.0.0.1:8000"
    assert key_id_of(base64.b64decode(body["trusted_public_key"])) == body["key_id"]
    assert body["edge_config"]["device_token"] == body["token"]
    key = client.get("/api/v1/fleet/signing-key", headers=operator_headers).json()
    assert key["public_key"] == body["trusted_public_key"]

    device_headers = {"Authorization": f"Bearer {body['token']}"}
    me = client.get("/api/v1/whoami", headers=device_headers)
    assert me.status_code == 200 and me.json()["role"] == "device" and me.json()["device_id"] == "dev-1"
    own = client.get("/api/v1/fleet/devices/dev-1", headers=device_headers)
    assert own.status_code == 200 and own.json()["group"] == "lab"

    provision(client, operator_headers, "dev-2")
    other = client.get("/api/v1/fleet/devices/dev-2", headers=device_headers)
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    assert client.get("/api/v1/fleet/devices/dev-2/manifest", headers=device_headers).status_code == 403
    assert client.get("/api/v1/fleet/devices", headers=device_headers).status_code == 403
    assert client.post("/api/v1/fleet/devices", json={"id": "x"}, headers=device_headers).status_code == 403

    duplicate = client.post("/api/v1/fleet/devices", json={"id": "dev-1"}, headers=operator_headers)
    assert duplicate.status_code == 409
    audit = client.get("/api/v1/audit/entries", params={"action": "device.provision"}, headers=admin_headers)
    assert [e["resource_id"] for e in audit.json()] == ["dev-1", "dev-2"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rotating_the_token_revokes_the_old_one(client: TestClient, operator_headers: dict[str, str],
                                                admin_headers: dict[str, str]) -> None:
    old = provision(client, operator_headers, "dev-r")["token"]
    rotated = client.post("/api/v1/fleet/devices/dev-r/token", headers=admin_headers)
    assert rotated.status_code == 200
    new = rotated.json()["token"]
    assert client.get("/api/v1/fleet/devices/dev-r", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/api/v1/fleet/devices/dev-r", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_selector_resolution_and_filters(client: TestClient, operator_headers: dict[str, str],
                                         database: Database) -> None:
    provision(client, operator_headers, "a1", group="east", labels={"hw": "pi4", "ring": "canary"})
    provision(client, operator_headers, "a2", group="east", labels={"hw": "pi5"})
    provision(client, operator_headers, "b1", group="west", labels={"hw": "pi4"})
    with database.transaction(write=False) as session:
        def ids(**criteria: object) -> list[str]:
            return [d.id for d in service.resolve_selector(session=session, selector=Selector(**criteria))]

        assert ids(group="east") == ["a1", "a2"]
        assert ids(labels={"hw": "pi4"}) == ["a1", "b1"]
        assert ids(group="east", labels={"hw": "pi4"}) == ["a1"]
        assert ids(device_ids=["b1", "a2"]) == ["a2", "b1"]
        assert ids(device_ids=["a1", "b1"], group="west") == ["b1"]
    listed = client.get("/api/v1/fleet/devices", params={"label": "hw=pi4"}, headers=operator_headers).json()
    assert [d["id"] for d in listed] == ["a1", "b1"]
    patched = client.patch("/api/v1/fleet/devices/b1", json={"group": "east"}, headers=operator_headers)
    assert patched.status_code == 200 and patched.json()["group"] == "east"
    east = client.get("/api/v1/fleet/devices", params={"group": "east"}, headers=operator_headers).json()
    assert [d["id"] for d in east] == ["a1", "a2", "b1"]
    unknown = client.post("/api/v1/fleet/deployments", headers=operator_headers, json={
        "model": "m", "version": 1, "selector": {"device_ids": ["nope"]}})
    assert unknown.status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_acl_needs_admin_and_confines_devices(client: TestClient, operator_headers: dict[str, str],
                                              admin_headers: dict[str, str], make_headers: TokenFactory) -> None:
    provision(client, operator_headers, "dev-acl")
    assert client.get("/api/v1/fleet/acl", headers=operator_headers).status_code == 403
    acl = client.get("/api/v1/fleet/acl", headers=admin_headers)
    assert acl.status_code == 200
    assert "pattern read edgeloop/devices/%u/manifest" in acl.text
    assert "pattern write edgeloop/devices/%u/status" in acl.text
    assert "# device dev-acl" in acl.text
    assert "pattern readwrite" not in acl.text

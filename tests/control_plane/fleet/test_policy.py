"""Protected devices and device tokens: what an operator may not do without an approver or an admin."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.settings import Settings
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import FleetModels, provision, register

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
PROD = {"env": "production"}


@pytest.fixture
def roles(make_headers: TokenFactory) -> dict[str, dict[str, str]]:
    return {role: make_headers(role) for role in ("operator", "approver", "admin")}


@pytest.fixture
def fleet(client: TestClient, roles: dict[str, dict[str, str]], fleet_models: FleetModels) -> TestClient:
    """digits v1 and v2, devices prod-1 (env=production, group edge) and lab-1 (group edge)."""
    operator = roles["operator"]
    register(client, operator, "digits", 1, [(fleet_models.v1_int8, "int8")])
    register(client, operator, "digits", 2, [(fleet_models.v2_int8, "int8")])
    provision(client, operator, "prod-1", group="edge", labels=PROD)
    provision(client, operator, "lab-1", group="edge", labels={"env": "lab"})
    return client


def deploy(client: TestClient, headers: dict[str, str], selector: dict[str, Any], **version: Any) -> Any:
    return client.post("/api/v1/fleet/deployments", headers=headers,
                       json={"model": "digits", "selector": selector, **version})


def pin_production(client: TestClient, roles: dict[str, dict[str, str]], version: int) -> None:
    moved = client.put("/api/v1/models/digits/aliases/production", json={"version": version},
                       headers=roles["approver"])
    assert moved.status_code == 200, moved.text


@SQLITE_ONLY
def test_operator_deploys_only_the_production_version_to_protected_devices(
        fleet: TestClient, roles: dict[str, dict[str, str]]) -> None:
    operator = roles["operator"]
    unpinned = deploy(fleet, operator, {"device_ids": ["prod-1"]}, version=2)
    assert unpinned.status_code == 403 and "is not set" in unpinned.json()["error"]["message"]
    pin_production(fleet, roles, 1)
    refused = deploy(fleet, operator, {"device_ids": ["prod-1"]}, version=2)
    assert refused.status_code == 403 and "names version 1" in refused.json()["error"]["message"]
    # A selector that only partly reaches production is refused as a whole.
    assert deploy(fleet, operator, {"group": "edge"}, version=2).status_code == 403
    assert deploy(fleet, operator, {"device_ids": ["prod-1"]}, version=1).status_code == 201
    assert deploy(fleet, operator, {"device_ids": ["prod-1"]}, alias="production").status_code == 201
    assert deploy(fleet, operator, {"device_ids": ["lab-1"]}, version=2).status_code == 201
    assert deploy(fleet, roles["approver"], {"device_ids": ["prod-1"]}, version=2).status_code == 201


@SQLITE_ONLY
def test_operator_cannot_move_a_device_around_the_rule(fleet: TestClient, roles: dict[str, dict[str, str]]) -> None:
    operator = roles["operator"]
    # Unlabel, deploy anything, relabel: each crossing of the protected set needs an approver.
    out = fleet.patch("/api/v1/fleet/devices/prod-1", json={"labels": {"env": "lab"}}, headers=operator)
    assert out.status_code == 403
    into = fleet.patch("/api/v1/fleet/devices/lab-1", json={"labels": PROD}, headers=operator)
    assert into.status_code == 403
    assert fleet.patch("/api/v1/fleet/devices/prod-1", json={"name": "renamed", "labels": {**PROD, "hw": "pi5"}},
                       headers=operator).status_code == 200
    assert fleet.patch("/api/v1/fleet/devices/lab-1", json={"labels": PROD},
                       headers=roles["approver"]).status_code == 200


@SQLITE_ONLY
def test_an_alias_anyone_can_move_does_not_pin(client: TestClient, settings: Settings,
                                              roles: dict[str, dict[str, str]], fleet_models: FleetModels) -> None:
    client.app.state.settings = settings.model_copy(update={"protected_alias": "stable"})  # type: ignore[attr-defined]
    register(client, roles["operator"], "digits", 1, [(fleet_models.v1_int8, "int8")])
    provision(client, roles["operator"], "prod-1", labels=PROD)
    assert client.put("/api/v1/models/digits/aliases/stable", json={"version": 1},
                      headers=roles["operator"]).status_code == 200
    refused = deploy(client, roles["operator"], {"device_ids": ["prod-1"]}, version=1)
    assert refused.status_code == 403 and "not protected" in refused.json()["error"]["message"]


@SQLITE_ONLY
def test_only_an_admin_receives_a_rotated_device_token(client: TestClient, roles: dict[str, dict[str, str]]) -> None:
    first = provision(client, roles["operator"], "dev-t")["token"]
    for role in ("operator", "approver"):
        refused = client.post("/api/v1/fleet/devices/dev-t/token", headers=roles[role])
        assert refused.status_code == 403 and "token" not in refused.json()
    # The refusal changed nothing: the device's own token still works.
    assert client.get("/api/v1/fleet/devices/dev-t", headers={"Authorization": f"Bearer {first}"}).status_code == 200
    rotated = client.post("/api/v1/fleet/devices/dev-t/token", headers=roles["admin"])
    assert rotated.status_code == 200 and rotated.json()["token"] != first

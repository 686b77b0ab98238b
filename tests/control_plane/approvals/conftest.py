"""Approval fixtures: a running rollout on two silent devices, proposal helpers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TokenFactory
from tests.control_plane.fleet import conftest as fleet_conftest
from tests.control_plane.fleet.conftest import FleetModels, provision, register, wait_for

fleet_models = fleet_conftest.fleet_models
__all__ = ["fleet_models", "wait_for"]


@pytest.fixture
def running_rollout(client: TestClient, fleet_models: FleetModels, make_headers: TokenFactory) -> dict[str, Any]:
    """Deploy digits v1 to two provisioned devices that never answer: the rollout stays in progress."""
    operator = make_headers("operator", name="ops")
    register(client, operator, "digits", 1, [(fleet_models.v1_fp32, "fp32")])
    for device in ("dev-1", "dev-2"):
        provision(client, operator, device, group="g")
    response = client.post("/api/v1/fleet/deployments", headers=operator,
                           json={"model": "digits", "version": 1, "selector": {"group": "g"}})
    assert response.status_code == 201, response.text
    rollout = dict(response.json())
    assert rollout["state"] == "in_progress"
    return rollout


def propose(client: TestClient, headers: dict[str, str], action: dict[str, Any], **body: Any) -> dict[str, Any]:
    """Create a proposal and return it."""
    response = client.post("/api/v1/proposals", headers=headers,
                           json={"action": action, "expected_effect": "stops the bleeding", **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def proposal_state(client: TestClient, headers: dict[str, str], proposal_id: str, *states: str) -> dict[str, Any]:
    """Wait until the proposal reaches one of ``states`` and return it."""
    def reached() -> dict[str, Any] | None:
        body = client.get(f"/api/v1/proposals/{proposal_id}", headers=headers).json()
        return dict(body) if body["state"] in states else None
    return dict(wait_for(reached, timeout=30))

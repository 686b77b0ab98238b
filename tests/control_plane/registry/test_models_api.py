"""Registry API: models, versions, aliases and their error contract."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import TokenFactory


def test_create_model_version_and_alias(client: TestClient, operator_headers: dict[str, str],
                                        make_headers: TokenFactory) -> None:
    created = client.post("/api/v1/models", json={"name": "m1", "description": "d"}, headers=operator_headers)
    assert created.status_code == 201, created.text
    assert created.json()["latest_version"] is None
    v1 = client.post("/api/v1/models/m1/versions", json={}, headers=operator_headers)
    v2 = client.post("/api/v1/models/m1/versions", json={"metrics": {"acc": 0.9}}, headers=operator_headers)
    assert (v1.json()["version"], v2.json()["version"]) == (1, 2)

    staging = client.put("/api/v1/models/m1/aliases/staging", json={"version": 2}, headers=operator_headers)
    assert staging.status_code == 200 and staging.json()["protected"] is False
    resolved = client.get("/api/v1/models/m1/aliases/staging", headers=operator_headers)
    assert resolved.json()["version"] == 2 and resolved.json()["aliases"] == ["staging"]

    # production is protected: an operator is refused, an approver may move it.
    refused = client.put("/api/v1/models/m1/aliases/production", json={"version": 1}, headers=operator_headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["required_scope"] == "approve"
    approver = make_headers("approver")
    moved = client.put("/api/v1/models/m1/aliases/production", json={"version": 1}, headers=approver)
    assert moved.status_code == 200 and moved.json()["protected"] is True


def test_error_contract(client: TestClient, operator_headers: dict[str, str], make_headers: TokenFactory) -> None:
    missing = client.get("/api/v1/models/nope", headers=operator_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    invalid = client.post("/api/v1/models", json={"name": ""}, headers=operator_headers)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["details"]["errors"][0]["field"] == "body.name"

    client.post("/api/v1/models", json={"name": "m2"}, headers=operator_headers)
    assert client.post("/api/v1/models", json={"name": "m2"}, headers=operator_headers).status_code == 409
    client.post("/api/v1/models/m2/versions", json={"version": 5}, headers=operator_headers)
    duplicate = client.post("/api/v1/models/m2/versions", json={"version": 5}, headers=operator_headers)
    assert duplicate.status_code == 409

    viewer = make_headers("viewer")
    assert client.post("/api/v1/models", json={"name": "m3"}, headers=viewer).status_code == 403
    assert client.get("/api/v1/models", headers=viewer).status_code == 200
    assert client.get("/api/v1/models").status_code == 401
    assert client.get("/api/v1/models", headers={"Authorization": "Bearer elp_x_y"}).status_code == 401


def test_model_with_aliases_reads_back(client: TestClient, operator_headers: dict[str, str]) -> None:
    # GET /models/{name} used to answer 500 once a model had an alias (ORM alias rows validated as AliasRead).
    client.post("/api/v1/models", json={"name": "aliased"}, headers=operator_headers)
    client.post("/api/v1/models/aliased/versions", json={}, headers=operator_headers)
    client.post("/api/v1/models/aliased/versions", json={}, headers=operator_headers)
    client.put("/api/v1/models/aliased/aliases/staging", json={"version": 2}, headers=operator_headers)
    client.put("/api/v1/models/aliased/aliases/canary", json={"version": 1}, headers=operator_headers)
    model = client.get("/api/v1/models/aliased", headers=operator_headers)
    assert model.status_code == 200, model.text
    assert model.json()["latest_version"] == 2
    assert [(a["alias"], a["version"]) for a in model.json()["aliases"]] == [("canary", 1), ("staging", 2)]
    listed = client.get("/api/v1/models", headers=operator_headers).json()
    assert [a["alias"] for a in next(m for m in listed if m["name"] == "aliased")["aliases"]] == ["canary", "staging"]
    versions = client.get("/api/v1/models/aliased/versions", headers=operator_headers).json()
    assert [(v["version"], v["aliases"]) for v in versions] == [(1, ["canary"]), (2, ["staging"])]


def test_alias_moves_and_reads_back(client: TestClient, operator_headers: dict[str, str]) -> None:
    client.post("/api/v1/models", json={"name": "mover"}, headers=operator_headers)
    for _ in range(2):
        client.post("/api/v1/models/mover/versions", json={}, headers=operator_headers)
    first = client.put("/api/v1/models/mover/aliases/champion", json={"version": 1}, headers=operator_headers)
    moved = client.put("/api/v1/models/mover/aliases/champion", json={"version": 2}, headers=operator_headers)
    assert (first.json()["version"], moved.json()["version"]) == (1, 2)
    resolved = client.get("/api/v1/models/mover/aliases/champion", headers=operator_headers).json()
    assert (resolved["version"], resolved["aliases"], resolved["model_name"]) == (2, ["champion"], "mover")
    v1 = client.get("/api/v1/models/mover/versions/1", headers=operator_headers).json()
    assert v1["aliases"] == [] and v1["model_name"] == "mover"


def test_missing_model_version_and_alias_say_which(client: TestClient, operator_headers: dict[str, str]) -> None:
    client.post("/api/v1/models", json={"name": "present"}, headers=operator_headers)
    no_model = client.get("/api/v1/models/absent/versions/1", headers=operator_headers).json()
    no_version = client.get("/api/v1/models/present/versions/1", headers=operator_headers).json()
    no_alias = client.get("/api/v1/models/present/aliases/champion", headers=operator_headers).json()
    assert no_model["error"]["message"] == "model 'absent' not found"
    assert no_version["error"]["message"] == "model 'present' has no version 1"
    assert no_alias["error"]["message"] == "model 'present' has no alias 'champion'"

"""Regression (found by schemathesis): list offsets beyond BIGINT are a 422, not a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_model_list_offset_beyond_bigint_is_rejected(client: TestClient, operator_headers: dict[str, str]) -> None:
    too_big = client.get("/api/v1/models", params={"offset": 2**63}, headers=operator_headers)
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "invalid"
    assert client.get("/api/v1/models", params={"offset": 2**63 - 1}, headers=operator_headers).json() == []


def test_unknown_route_and_method_use_the_shared_error_body(client: TestClient,
                                                            operator_headers: dict[str, str]) -> None:
    missing = client.get("/api/v1/no-such-thing", headers=operator_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = client.delete("/api/v1/models", headers=operator_headers)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"

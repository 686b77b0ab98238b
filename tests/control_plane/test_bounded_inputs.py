"""Every input that reaches the database is bounded: integers fit their column, text is capped, no NUL, no Infinity.

The first test reads the OpenAPI document, so a new route or field without bounds fails here rather than as a 500
on PostgreSQL; the others send the values that were 500s on one engine or the other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.constraints import DESCRIPTION_MAX, INT32_MAX, INT64_MAX, INT64_MIN, SMALL_JSON_MAX_BYTES
from control_plane.main import create_app
from control_plane.settings import Settings

API = "/api/v1"
UNBOUNDED_STRING_FORMATS = {"date-time", "date", "binary", "uuid"}


def walk(schema: dict[str, Any], components: dict[str, Any], where: str) -> Iterator[str]:
    """Yield a description of every integer without bounds and every string without a length cap."""
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            yield from walk(option, components, where)
    kind = schema.get("type")
    if kind == "integer":
        # Exclusive bounds are compared as the integers they admit (2**63 exclusive: at most 2**63 - 1).
        # The document may carry them as floats: 2**63 is exact as a float, 2**63 - 1 is not (it rounds up).
        low = schema.get("minimum", None if "exclusiveMinimum" not in schema else int(schema["exclusiveMinimum"]) + 1)
        high = schema.get("maximum", None if "exclusiveMaximum" not in schema else int(schema["exclusiveMaximum"]) - 1)
        if low is None or high is None or low < INT64_MIN or high > INT64_MAX:
            yield f"{where}: integer bounds {low}..{high}"
    elif kind == "string":
        capped = {"maxLength", "enum", "const"} & schema.keys()
        if not capped and schema.get("format") not in UNBOUNDED_STRING_FORMATS:
            yield f"{where}: string without maxLength"
    elif kind == "object":
        for name, prop in schema.get("properties", {}).items():
            yield from walk(prop, components, f"{where}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            yield from walk(schema["additionalProperties"], components, f"{where}.*")
    elif kind == "array":
        if "items" in schema:
            yield from walk(schema["items"], components, f"{where}[]")
        for index, item in enumerate(schema.get("prefixItems", [])):
            yield from walk(item, components, f"{where}[{index}]")


def test_every_parameter_and_body_field_is_bounded() -> None:
    app = create_app(Settings(data_dir=tempfile.mkdtemp()))
    document = app.openapi()
    components = document.get("components", {}).get("schemas", {})
    problems = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query"):
                    problems += walk(parameter["schema"], components, f"{label} {parameter['in']} {parameter['name']}")
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                if "json" in media:
                    problems += walk(content["schema"], components, f"{label} body")
    assert not problems, "\n".join(problems)


@pytest.fixture
def seeded(client: TestClient, admin_headers: dict[str, str]) -> dict[str, str]:
    """A model with a version, so alias and version routes get past their 404s."""
    assert client.post(f"{API}/models", json={"name": "m"}, headers=admin_headers).status_code == 201
    assert client.post(f"{API}/models/m/versions", json={}, headers=admin_headers).status_code == 201
    return admin_headers


TOO_BIG = [INT32_MAX + 1, INT64_MAX + 1, 2**64]


@pytest.mark.parametrize("value", TOO_BIG)
def test_integers_past_their_column_are_422(client: TestClient, seeded: dict[str, str], value: int) -> None:
    h = seeded
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", f"{API}/models/m/aliases/staging", {"json": {"version": value}}),
        ("POST", f"{API}/models/m/versions", {"json": {"version": value}}),
        ("GET", f"{API}/models/m/versions/{value}", {}),
        ("POST", f"{API}/fleet/deployments", {"json": {"model": "m", "version": value, "selector": {"group": "g"}}}),
        ("POST", f"{API}/fleet/deployments", {"json": {"model": "m", "version": 1, "selector": {"group": "g"},
                                                         "strategy": {"base_count": value}}}),
        ("POST", f"{API}/drift/monitors", {"json": {"model_name": "m", "model_version": value}}),
        ("POST", f"{API}/drift/monitors", {"json": {"model_name": "m", "config": {"raise_after": value}}}),
        ("POST", f"{API}/drift/evaluate", {"json": {"model_name": "m", "model_version": value}}),
        ("GET", f"{API}/drift/report", {"params": {"model": "m", "version": value}}),
        ("GET", f"{API}/alerts", {"params": {"version": value}}),
        ("GET", f"{API}/telemetry/windows", {"params": {"version": value}}),
        ("PUT", f"{API}/prompts/p/labels/prod", {"json": {"version": value}}),
    ]
    if value > INT64_MAX:  # 64-bit columns and offsets: only past 2**63
        requests += [
            ("POST", f"{API}/telemetry/labels", {"json": {"labels": [{"device_id": "d", "window_seq": value,
                                                                       "confusion": [[0, 0, 1]]}]}}),
            ("POST", f"{API}/telemetry/labels", {"json": {"labels": [{"device_id": "d", "window_seq": 1,
                                                                       "confusion": [[0, 0, value]]}]}}),
            ("GET", f"{API}/alerts", {"params": {"offset": value}}),
            ("GET", f"{API}/fleet/devices", {"params": {"offset": value}}),
            ("GET", f"{API}/audit/entries", {"params": {"after_seq": value}}),
        ]
    for method, url, kwargs in requests:
        response = client.request(method, url, headers=h, **kwargs)
        assert response.status_code == 422, (method, url, kwargs, response.status_code, response.text[:300])
        assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("body", [{"version": True}, {"version": "1"}, {"version": 1.0}])
def test_integers_are_not_coerced(client: TestClient, seeded: dict[str, str], body: dict[str, Any]) -> None:
    response = client.put(f"{API}/models/m/aliases/staging", json=body, headers=seeded)
    assert response.status_code == 422, response.text


def test_free_form_fields_are_capped(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    too_long = client.post(f"{API}/models", json={"name": "m", "description": "x" * (DESCRIPTION_MAX + 1)}, headers=h)
    too_many_tags = client.post(f"{API}/models", json={"name": "m", "tags": {"t": "x" * SMALL_JSON_MAX_BYTES}},
                                headers=h)
    assert (too_long.status_code, too_many_tags.status_code) == (422, 422)
    assert "tags" in too_many_tags.json()["error"]["message"]
    assert client.get(f"{API}/models", headers=h).json() == []
    # What fits is stored, and the audit entry it makes is bounded by the same caps.
    fits = {"name": "m", "description": "x" * DESCRIPTION_MAX, "tags": {"t": "x" * (SMALL_JSON_MAX_BYTES - 100)}}
    assert client.post(f"{API}/models", json=fits, headers=h).status_code == 201
    entries = client.get(f"{API}/audit/entries", params={"action": "model.create"}, headers=h).json()
    assert len(str(entries)) < DESCRIPTION_MAX + SMALL_JSON_MAX_BYTES + 2000


@pytest.mark.parametrize("raw", [b'{"model_name": "m", "config": {"psi_raise": Infinity}}',
                                 b'{"model_name": "m", "config": {"psi_raise": 1e999}}'])
def test_non_finite_numbers_are_refused_not_stored_as_null(client: TestClient, admin_headers: dict[str, str],
                                                           raw: bytes) -> None:
    response = client.post(f"{API}/drift/monitors", content=raw,
                           headers={"content-type": "application/json", **admin_headers})
    assert response.status_code == 422, response.text
    assert client.get(f"{API}/drift/monitors", headers=admin_headers).json() == []


def test_infinite_query_numbers_are_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    for params in ({"model": "m", "version": 1, "bucket_seconds": "inf"}, {"model": "m", "version": 1,
                                                                            "alpha": "nan"}):
        assert client.get(f"{API}/drift/report", params=params, headers=admin_headers).status_code == 422
    assert client.get(f"{API}/telemetry/windows", params={"since": "-inf"}, headers=admin_headers).status_code == 422


@pytest.mark.parametrize("url", [f"{API}/models/a%00b", f"{API}/fleet/devices/d%00", f"{API}/alerts/%00",
                                 f"{API}/telemetry/windows?device_id=%00", f"{API}/prompts/p%00/versions"])
def test_nul_anywhere_in_the_url_is_422_on_every_engine(client: TestClient, admin_headers: dict[str, str],
                                                        url: str) -> None:
    response = client.get(url, headers=admin_headers)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("since", ["-65920396", "1700000000", "1.5e9"])
def test_a_number_is_not_silently_read_as_a_date(client: TestClient, admin_headers: dict[str, str],
                                                 since: str) -> None:
    assert client.get(f"{API}/alerts", params={"since": since}, headers=admin_headers).status_code == 422
    response = client.get(f"{API}/drift/report", params={"model": "m", "version": 1, "until": since},
                          headers=admin_headers)
    assert response.status_code == 422 and "ISO 8601" in response.text
    iso = client.get(f"{API}/alerts", params={"since": "2026-01-31T12:00:00Z"}, headers=admin_headers)
    assert iso.status_code == 200

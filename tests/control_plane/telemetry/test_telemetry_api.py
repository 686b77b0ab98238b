"""HTTP ingest (device-scoped, same code path as MQTT), listings, stats and delayed labels."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from control_plane.drift.baseline import Baseline
from tests.conftest import TokenFactory
from tests.control_plane.telemetry.test_ingest import windows


def test_http_ingest_is_device_scoped_and_idempotent(client: TestClient, make_headers: TokenFactory,
                                                     dataset_id: str, baseline: Baseline, sensor_model: None) -> None:
    device = make_headers("device", device_id="dev-1")
    messages = windows(baseline, count=3)
    first = client.post("/api/v1/telemetry/windows", json=messages, headers=device)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 3, "stored": 3, "duplicates": 0, "quarantined": {},
                            "windows": [{"status": "stored", "window_seq": seq, "reason": None} for seq in (1, 2, 3)]}
    single = client.post("/api/v1/telemetry/windows", json=messages[0], headers=device)
    assert single.json()["duplicates"] == 1

    foreign = windows(baseline, device_id="dev-2", count=1)
    refused = client.post("/api/v1/telemetry/windows", json=foreign, headers=device)
    assert refused.json()["quarantined"] == {"device_mismatch": 1}

    viewer = make_headers("viewer")
    assert client.post("/api/v1/telemetry/windows", json=messages, headers=viewer).status_code == 403
    listed = client.get("/api/v1/telemetry/windows", params={"model": "sensor-clf", "version": 1}, headers=viewer)
    assert [w["window_seq"] for w in listed.json()] == [3, 2, 1]
    assert listed.json()[0]["n"] == 200
    quarantine = client.get("/api/v1/telemetry/quarantine", params={"reason": "device_mismatch"}, headers=viewer)
    assert quarantine.json()[0]["device_id"] == "dev-2" and quarantine.json()[0]["source"] == "http"
    stats = client.get("/api/v1/telemetry/stats", headers=viewer).json()
    assert stats["windows"] == 3 and stats["quarantined"] == {"device_mismatch": 1}
    assert stats["process"]["http"]["duplicates"] == 1


def test_labels_attach_to_windows(client: TestClient, make_headers: TokenFactory, dataset_id: str, sensor_model: None,
                                  baseline: Baseline, operator_headers: dict[str, str]) -> None:
    device = make_headers("device", device_id="dev-1")
    messages = windows(baseline, count=2)
    client.post("/api/v1/telemetry/windows", json=messages, headers=device)
    body = {"labels": [
        {"device_id": "dev-1", "window_seq": 1, "confusion": [[0, 0, 90], [1, 0, 10]]},
        {"device_id": "dev-1", "window_seq": 99, "confusion": [[0, 0, 1]]},
    ]}
    posted = client.post("/api/v1/telemetry/labels", json=body, headers=operator_headers)
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"stored": 1, "replaced": 0, "unknown_windows": [["dev-1", 99]]}
    again = client.post("/api/v1/telemetry/labels", json=body, headers=operator_headers)
    assert again.json()["replaced"] == 1
    negative = {"labels": [{"device_id": "dev-1", "window_seq": 1, "confusion": [[0, 0, -1]]}]}
    assert client.post("/api/v1/telemetry/labels", json=negative, headers=operator_headers).status_code == 422
    assert client.post("/api/v1/telemetry/labels", json=body, headers=device).status_code == 403


def test_http_ingest_answers_per_window_and_a_bad_one_costs_no_good_one(
        client: TestClient, make_headers: TokenFactory, dataset_id: str, baseline: Baseline,
        sensor_model: None) -> None:
    device = make_headers("device", device_id="dev-1")
    good = windows(baseline, count=6, rows=20)
    spoiled = [{**good[1], "window_seq": 2**63}, {**good[2], "model": {"name": "x" * 300, "version": 1}},
               {**good[3], "model": {"name": "sensor-clf", "version": 2**31}}, {**good[4], "window_start": -1e308}]
    response = client.post("/api/v1/telemetry/windows", json=[good[0], *spoiled, good[5]], headers=device)
    assert response.status_code == 200, response.text
    results = response.json()["windows"]
    assert [r["status"] for r in results] == ["stored", *["quarantined"] * 4, "stored"]
    assert [r["reason"] for r in results] == [None, "out_of_range", "bad_model", "bad_model", "implausible_time", None]
    # A body nested past what any JSON parser walks cannot be split into windows: a clear 400, nothing stored.
    body = json.dumps([good[2], {"deep": "DEEP"}]).encode().replace(b'"DEEP"', b"[" * 100_000 + b"]" * 100_000)
    deep = client.post("/api/v1/telemetry/windows", content=body,
                       headers={**device, "content-type": "application/json"})
    assert deep.status_code == 400, deep.text
    listed = client.get("/api/v1/telemetry/windows", params={"device_id": "dev-1"}, headers=make_headers("viewer"))
    assert sorted(w["window_seq"] for w in listed.json()) == [good[0]["window_seq"], good[5]["window_seq"]]

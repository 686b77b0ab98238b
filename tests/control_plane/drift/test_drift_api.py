"""Drift API: exact comparisons, reports over time buckets, monitors and on-demand evaluation."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from tests.conftest import TokenFactory
from tests.control_plane.drift.test_monitor import NOW, feed
from tests.control_plane.telemetry.conftest import baseline, dataset_id  # noqa: F401  (fixtures)
from tests.control_plane.telemetry.simulate import reference_data


def test_exact_drift_on_raw_rows_and_against_a_dataset(client: TestClient, make_headers: TokenFactory,
                                                       dataset_id: str) -> None:  # noqa: F811
    viewer = make_headers("viewer")
    reference, _ = reference_data(800, seed=1)
    current, _ = reference_data(600, seed=2)
    current[:, 2] += 3.0
    current[0, 0] = np.nan
    body = {"reference": {"rows": reference.tolist()},
            "current": [[None if np.isnan(v) else v for v in row] for row in current.tolist()],
            "feature_names": ["temperature", "pressure", "vibration", "humidity", "mode"], "categorical": [4]}
    exact = client.post("/api/v1/drift/exact", json=body, headers=viewer)
    assert exact.status_code == 200, exact.text
    report = exact.json()
    assert report["mode"] == "exact" and report["correction"] == "bh"
    verdicts = {f["feature"]: f for f in report["features"]}
    assert [name for name, f in verdicts.items() if f["drifted"]] == ["vibration"]
    assert verdicts["vibration"]["test"] == "ks" and verdicts["mode"]["test"] == "chi2"
    assert verdicts["temperature"]["nonfinite_current"] == 1

    binned = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"dataset_id": dataset_id}, "current": current.tolist()[1:]})
    assert binned.status_code == 200, binned.text
    assert binned.json()["mode"] == "sketch"
    assert [f["feature"] for f in binned.json()["features"] if f["drifted"]] == ["vibration"]

    ragged = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"rows": [[1.0, 2.0]]}, "current": [[1.0, 2.0], [1.0]]})
    assert ragged.status_code == 422
    both = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"rows": [[1.0]], "dataset_id": dataset_id}, "current": [[1.0]]})
    assert both.status_code == 422
    wrong_width = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"dataset_id": dataset_id}, "current": [[1.0, 2.0]]})
    assert wrong_width.status_code == 422 and "columns" in wrong_width.json()["error"]["message"]


def test_report_buckets_show_when_drift_began(client: TestClient, database: Database, make_headers: TokenFactory,
                                              baseline: Baseline, dataset_id: str) -> None:  # noqa: F811
    start = NOW - 7200
    feed(database, baseline, start, count=10)  # 10 calm minutes
    feed(database, baseline, start + 3600, count=10, first_seq=100, shift={0: 6.0})
    params: dict[str, Any] = {"model": "sensor-clf", "version": 1,
                              "since": datetime.fromtimestamp(start, UTC).isoformat(),
              "until": datetime.fromtimestamp(start + 7200, UTC).isoformat(), "bucket_seconds": 3600}
    report = client.get("/api/v1/drift/report", params=params, headers=make_headers("viewer"))
    assert report.status_code == 200, report.text
    body = report.json()
    assert [b["windows"] for b in body["buckets"]] == [50, 50] and body["overall"]["windows"] == 100
    drifted = [[f["feature"] for f in b["features"] if f["drifted"]] for b in body["buckets"]]
    assert drifted[0] == [] and "temperature" in drifted[1]
    assert body["buckets"][0]["error_rate"] == 0.0 and body["buckets"][0]["latency_p95_ms"] == 5.0
    too_many = client.get("/api/v1/drift/report", params={**params, "bucket_seconds": 1},
                          headers=make_headers("viewer"))
    assert too_many.status_code == 422


def test_monitors_and_evaluate(client: TestClient, database: Database, make_headers: TokenFactory,
                               operator_headers: dict[str, str], baseline: Baseline,  # noqa: F811
                               dataset_id: str) -> None:  # noqa: F811
    body = {"model_name": "sensor-clf", "model_version": 1, "config": {"raise_after": 1, "lookback_seconds": 1800}}
    created = client.post("/api/v1/drift/monitors", json=body, headers=operator_headers)
    assert created.status_code == 201, created.text
    assert created.json()["config"]["psi_raise"] == 0.2
    assert client.post("/api/v1/drift/monitors", json=body, headers=operator_headers).status_code == 409
    bad = {**body, "config": {"psi_raise": 0.1, "psi_clear": 0.3}}
    assert client.post("/api/v1/drift/monitors", json=bad, headers=operator_headers).status_code == 422
    viewer = make_headers("viewer")
    assert client.get("/api/v1/drift/monitors", headers=viewer).json()[0]["id"] == created.json()["id"]

    feed(database, baseline, time.time() - 1200, shift={2: 4.0})
    assert client.post("/api/v1/drift/evaluate", json={}, headers=viewer).status_code == 403
    evaluated = client.post("/api/v1/drift/evaluate", json={"model_name": "sensor-clf"}, headers=operator_headers)
    assert evaluated.status_code == 200, evaluated.text
    opened = [o for o in evaluated.json()["outcomes"] if o["action"] == "opened"]
    assert {(o["check"], o["feature"]) for o in opened} >= {("feature_drift", "vibration")}
    alerts = client.get("/api/v1/alerts", params={"feature": "vibration"}, headers=viewer).json()
    assert alerts["total"] == 1 and alerts["items"][0]["monitor_id"] == created.json()["id"]


def test_evaluate_refuses_a_boolean_version(client: TestClient, operator_headers: dict[str, str]) -> None:
    # Lax validation would read JSON true as version 1 (found by schemathesis).
    response = client.post("/api/v1/drift/evaluate", json={"model_name": "m", "model_version": True},
                           headers=operator_headers)
    assert response.status_code == 422 and response.json()["error"]["details"]["errors"][0]["field"] == (
        "body.model_version")

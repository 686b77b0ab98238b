"""Malformed baselines: refused at registration (422 naming the field); a stored one never causes a 500.

A baseline stored before the strict schema existed (here: written straight into the table) is marked invalid
by the cache: its windows are quarantined as `baseline_invalid`, reports and the exact endpoint say why, and
every other baseline keeps working.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline, compute_baseline_id
from control_plane.drift.models import DriftMonitor
from control_plane.registry.models import Dataset
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, WindowIngestor
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from tests.conftest import TokenFactory
from tests.control_plane.drift.test_monitor import NOW, feed
from tests.control_plane.telemetry.conftest import baseline, dataset_id  # noqa: F401  (fixtures)
from tests.control_plane.telemetry.simulate import (
    MODEL,
    ListSink,
    SimDevice,
    encode,
    make_baseline,
    register_baseline,
    register_model,
)


def _broken(reference: Baseline) -> dict[str, Any]:
    """The baseline with a string among its edges, still claiming its id (what the old code let through)."""
    document = copy.deepcopy(reference.to_dict())
    document["numeric"][0]["edges"][3] = "oops"
    return document


def _corrupt(reference: Baseline, corruption: str) -> dict[str, Any]:
    """A legacy document the old code accepted: its id is recomputed over the corrupted content where needed."""
    if corruption == "string_in_edges":
        return _broken(reference)  # keeps its id: the old code raised TypeError (a 500) before the id check
    document = copy.deepcopy(reference.to_dict())
    if corruption == "unsorted_vocabulary":
        document["categorical"][0]["values"].reverse()  # the old code answered 200 with chi-squared on swapped bins
    elif corruption == "decile_index_out_of_range":
        document["numeric"][1]["coarse"][-1] = 500
    elif corruption == "negative_count":
        counts = document["numeric"][2]["counts"]
        counts[0], counts[1] = -1, counts[1] + counts[0] + 1
    document["baseline_id"] = compute_baseline_id(document)
    return document


FIELDS = {"string_in_edges": "numeric[0].edges[3]", "unsorted_vocabulary": "categorical[0].values[1]",
          "decile_index_out_of_range": "numeric[1].coarse[8]", "negative_count": "numeric[2].counts[0]"}


def _windows(reference: Baseline, device: str, start: float, count: int = 2,
             baseline_id: str | None = None) -> list[IncomingMessage]:
    sink = ListSink()
    simulated = SimDevice(device, reference, sink, seed=7, start=start)
    for _ in range(count):
        simulated.run_window()
    messages = [{**m, "baseline_id": baseline_id or m["baseline_id"]} for m in sink.messages]
    return [IncomingMessage(encode(m), NOW, device_hint=m["device_id"]) for m in messages]


def test_registration_refuses_a_malformed_baseline_naming_the_field(client: TestClient,
                                                                     operator_headers: dict[str, str],
                                                                     baseline: Baseline) -> None:  # noqa: F811
    cases = {"numeric[0].edges[3]": _broken(baseline)}
    unsorted = copy.deepcopy(baseline.to_dict())
    unsorted["categorical"][0]["values"].reverse()
    cases["categorical[0].values[1]"] = unsorted
    negative = copy.deepcopy(baseline.to_dict())
    negative["numeric"][1]["counts"][0] = -1
    cases["numeric[1].counts[0]"] = negative
    for field, document in cases.items():
        response = client.post("/api/v1/datasets", headers=operator_headers, json={
            "name": "bad", "version": field, "fingerprint": "f" * 12, "baseline": document})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["details"]["field"] == f"baseline.{field}" and field in error["message"]
    valid = client.post("/api/v1/datasets", headers=operator_headers, json={
        "name": "good", "version": "1", "fingerprint": "f" * 12,
        "baseline": {k: v for k, v in baseline.to_dict().items() if k != "baseline_id"}})
    assert valid.status_code == 201, valid.text
    assert valid.json()["baseline"]["baseline_id"] == baseline.baseline_id  # stored with its content id


@pytest.mark.parametrize("corruption", sorted(FIELDS))
def test_a_stored_invalid_baseline_costs_nothing_else(client: TestClient, database: Database,
                                                      make_headers: TokenFactory, operator_headers: dict[str, str],
                                                      baseline: Baseline, dataset_id: str,  # noqa: F811
                                                      corruption: str) -> None:
    other = make_baseline(seed=1)
    register_baseline(database, other, name="other")
    feed(database, baseline, NOW - 1800, count=3)  # 15 windows on the baseline that is about to break
    feed(database, other, NOW - 1800, count=1, first_seq=50)  # 5 on the healthy one
    legacy = _corrupt(baseline, corruption)
    field, broken_id = FIELDS[corruption], legacy["baseline_id"]
    with database.transaction() as session:  # a legacy row: stored before registration checked anything
        session.execute(update(Dataset).where(Dataset.id == dataset_id).values(baseline=legacy))
        session.execute(update(TelemetryWindowRow).where(TelemetryWindowRow.baseline_id == baseline.baseline_id)
                        .values(baseline_id=broken_id))

    register_model(database)  # windows of unregistered models are quarantined before any baseline is read
    ingestor = WindowIngestor(TelemetrySettings())
    batch = _windows(baseline, "dev-broken", NOW - 600, baseline_id=broken_id) + _windows(other, "dev-healthy",
                                                                                          NOW - 600)
    with database.transaction() as session:
        result = ingestor.ingest(session, batch, now=NOW)
    assert result.stored == 2 and dict(result.quarantined) == {"baseline_invalid": 2}
    with database.transaction() as session:
        reasons = session.scalars(select(QuarantinedMessage.detail)).all()
    assert all(field in detail for detail in reasons)

    viewer = make_headers("viewer")
    params: dict[str, Any] = {"model": MODEL, "version": 1, "bucket_seconds": 3600,
                              "since": datetime.fromtimestamp(NOW - 3600, UTC).isoformat(),
                              "until": datetime.fromtimestamp(NOW, UTC).isoformat()}
    report = client.get("/api/v1/drift/report", params=params, headers=viewer)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["baseline_id"] == other.baseline_id and body["overall"]["windows"] == 7
    assert field in body["invalid_baselines"][broken_id]

    exact = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"dataset_id": dataset_id}, "current": [[20.0, 1000.0, 3.0, 50.0, 1.0]] * 40})
    assert exact.status_code == 422 and field in exact.json()["error"]["message"]

    evaluated = client.post("/api/v1/drift/evaluate", headers=operator_headers, json={"model_name": MODEL})
    assert evaluated.status_code == 200, evaluated.text


def test_a_baseline_id_that_is_not_a_string_is_skipped(database: Database, baseline: Baseline,  # noqa: F811
                                                       dataset_id: str) -> None:  # noqa: F811
    with database.transaction() as session:
        session.add(Dataset(name="odd", version="1", fingerprint="f" * 12, schema_={}, created_by="test",
                            baseline={"baseline_id": ["not", "hashable"], "schema": "x"}))
    register_model(database)  # windows of unregistered models are quarantined before any baseline is read
    ingestor = WindowIngestor(TelemetrySettings())
    with database.transaction() as session:
        result = ingestor.ingest(session, _windows(baseline, "dev-1", NOW - 600, count=1), now=NOW)
    assert result.stored == 1


def test_monitor_thresholds_must_be_finite(client: TestClient, database: Database,
                                           operator_headers: dict[str, str]) -> None:
    for raw in ('{"model_name": "m", "config": {"psi_raise": Infinity}}',
                '{"model_name": "m", "config": {"psi_critical": NaN}}',
                '{"model_name": "m", "config": {"latency_p95_ms_raise": 1e400}}'):
        response = client.post("/api/v1/drift/monitors", content=raw,
                               headers={**operator_headers, "Content-Type": "application/json"})
        assert response.status_code == 422, (raw, response.text)
    with database.transaction() as session:  # a legacy row whose Infinity was stored as null
        session.add(DriftMonitor(model_name=MODEL, model_version=1, config={"psi_raise": None}, enabled=True,
                                 created_by="test"))
    evaluated = client.post("/api/v1/drift/evaluate", headers=operator_headers,
                            json={"model_name": MODEL, "model_version": 1})
    assert evaluated.status_code == 200, evaluated.text
    assert json.loads(evaluated.text)["evaluated"] == 0


def test_a_baseline_that_is_not_even_json_costs_nothing_else(database: Database, baseline: Baseline,  # noqa: F811
                                                             dataset_id: str) -> None:  # noqa: F811
    other = make_baseline(seed=1)
    register_baseline(database, other, name="other")
    with database.transaction() as session:
        if database.is_sqlite:  # SQLite keeps any text in a JSON column; PostgreSQL refuses it on write
            session.execute(text("UPDATE datasets SET baseline = 'not json {' WHERE id = :id"), {"id": dataset_id})
        else:
            session.execute(update(Dataset).where(Dataset.id == dataset_id).values(baseline=["not", "an object"]))
    register_model(database)  # windows of unregistered models are quarantined before any baseline is read
    ingestor = WindowIngestor(TelemetrySettings())
    with database.transaction() as session:
        result = ingestor.ingest(session, _windows(other, "dev-healthy", NOW - 600)
                                 + _windows(baseline, "dev-lost", NOW - 600), now=NOW)
    assert result.stored == 2 and dict(result.quarantined) == {"unknown_baseline": 2}

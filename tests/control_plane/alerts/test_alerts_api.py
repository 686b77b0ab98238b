"""Alert API: filters, acknowledge, resolve, dedup by fingerprint, audit and lineage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from control_plane.alerts import service
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.db.session import Database
from tests.conftest import TokenFactory


def raise_one(database: Database, feature: str, severity: Severity = Severity.WARNING, model: str = "m",
              check: AlertCheck = AlertCheck.FEATURE_DRIFT) -> tuple[str, bool]:
    request = AlertRaise(fingerprint=f"fp-{model}-{check}-{feature}", check=check, severity=severity,
                         title=f"{feature} drift", model_name=model, model_version=1, feature=feature,
                         evidence={"psi": 0.4})
    with database.transaction() as session:
        alert, created = service.raise_alert(session=session, request=request, actor="system:monitor")
        return alert.id, created


def test_alert_lifecycle_and_filters(client: TestClient, database: Database, operator_headers: dict[str, str],
                                     make_headers: TokenFactory) -> None:
    first, created = raise_one(database, "pressure")
    again, created_again = raise_one(database, "pressure", Severity.CRITICAL)
    assert created and not created_again and again == first
    other, _ = raise_one(database, "humidity", model="n", check=AlertCheck.OUT_OF_RANGE)
    viewer = make_headers("viewer")

    listed = client.get("/api/v1/alerts", headers=viewer).json()
    assert listed["total"] == 2
    got = client.get(f"/api/v1/alerts/{first}", headers=viewer).json()
    assert (got["occurrences"], got["severity"], got["state"]) == (2, "critical", "open")
    assert got["evidence"] == {"psi": 0.4}
    by_model = client.get("/api/v1/alerts", params={"model": "n"}, headers=viewer).json()
    assert [a["id"] for a in by_model["items"]] == [other]
    critical = client.get("/api/v1/alerts", params={"min_severity": "critical"}, headers=viewer).json()
    assert [a["id"] for a in critical["items"]] == [first]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/api/v1/alerts", params={"since": future}, headers=viewer).json()["total"] == 0
    by_check = client.get("/api/v1/alerts", params={"check": "out_of_range"}, headers=viewer).json()
    assert by_check["total"] == 1

    assert client.post(f"/api/v1/alerts/{first}/acknowledge", headers=viewer).status_code == 403
    acked = client.post(f"/api/v1/alerts/{first}/acknowledge", json={"note": "looking"}, headers=operator_headers)
    assert acked.json()["state"] == "acknowledged" and acked.json()["acknowledged_by"].endswith("operator")
    states = client.get("/api/v1/alerts", params=[("state", "open"), ("state", "acknowledged")], headers=viewer)
    assert states.json()["total"] == 2
    resolved = client.post(f"/api/v1/alerts/{first}/resolve", json={"note": "baseline updated"},
                           headers=operator_headers)
    assert resolved.json()["state"] == "resolved" and resolved.json()["resolution"] == "baseline updated"
    assert client.post(f"/api/v1/alerts/{first}/resolve", headers=operator_headers).status_code == 409
    assert client.post(f"/api/v1/alerts/{first}/acknowledge", headers=operator_headers).status_code == 409
    assert client.get("/api/v1/alerts/al_missing", headers=viewer).status_code == 404

    # The fingerprint is free again: the same finding opens a fresh alert.
    reopened, created = raise_one(database, "pressure")
    assert created and reopened != first
    audit = client.get("/api/v1/audit/entries", params={"resource_type": "alert"}, headers=viewer).json()
    actions = [e["action"] for e in audit]
    assert actions.count("alert.open") == 3 and "alert.acknowledge" in actions and "alert.resolve" in actions

"""Incidents: correlation by the data rule, window, reopen within the cool-down, states, typed timeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.audit.models import AuditEntry
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.incidents.models import Incident
from control_plane.lineage.models import LineageEdge
from tests.conftest import TokenFactory


def raise_alert(database: Database, feature: str, *, severity: Severity = Severity.WARNING, version: int = 1,
                group: str | None = "north", model: str = "m") -> str:
    evidence: dict[str, Any] = {"psi": 0.4}
    if group:
        evidence["device_group"] = group
    request = AlertRaise(fingerprint=f"fp-{model}-{version}-{feature}-{group}", check=AlertCheck.FEATURE_DRIFT,
                         severity=severity, title=f"{feature} drift", model_name=model, model_version=version,
                         feature=feature, evidence=evidence)
    with database.transaction() as session:
        alert, _ = alerts.raise_alert(session=session, request=request, actor="system:monitor")
        return alert.id


def incidents(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/api/v1/incidents", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_alerts_correlate_by_model_version_and_group(client: TestClient, database: Database,
                                                     make_headers: TokenFactory) -> None:
    viewer = make_headers("viewer")
    first = raise_alert(database, "pressure")
    second = raise_alert(database, "humidity", severity=Severity.CRITICAL)
    other_group = raise_alert(database, "pressure", group="south")
    other_version = raise_alert(database, "pressure", version=2)
    listed = incidents(client, viewer)
    assert len(listed) == 3
    grouped = next(i for i in listed if first in i["alert_ids"])
    assert grouped["alert_ids"] == [first, second] and grouped["severity"] == "critical"
    assert grouped["key_values"]["evidence.device_group"] == "north" and grouped["state"] == "open"
    assert {other_group, other_version} == {a for i in listed if i["id"] != grouped["id"] for a in i["alert_ids"]}
    timeline = client.get(f"/api/v1/incidents/{grouped['id']}/timeline", headers=viewer).json()
    assert [(e["kind"], e["body"]["alert_id"]) for e in timeline] == [("alert_joined", first),
                                                                     ("alert_joined", second)]
    with database.transaction(write=False) as session:
        edges = {(e.src_kind, e.src_id, e.dst_id) for e in session.scalars(select(LineageEdge))}
        actions = [e.action for e in session.scalars(select(AuditEntry).where(
            AuditEntry.resource_id == grouped["id"]).order_by(AuditEntry.seq))]
    assert ("alert", first, grouped["id"]) in edges
    assert actions == ["incident.open", "incident.alert_joined", "incident.alert_joined"]


def test_an_alert_after_the_window_opens_a_new_incident(client: TestClient, database: Database,
                                                        make_headers: TokenFactory) -> None:
    first = raise_alert(database, "pressure")
    with database.transaction() as session:
        session.execute(update(Incident).values(last_alert_at=utcnow() - timedelta(hours=1)))
    later = raise_alert(database, "humidity")
    listed = incidents(client, make_headers("viewer"))
    assert sorted(len(i["alert_ids"]) for i in listed) == [1, 1]
    assert {a for i in listed for a in i["alert_ids"]} == {first, later}


def test_recurrence_within_the_cool_down_reopens(client: TestClient, database: Database,
                                                 operator_headers: dict[str, str], make_headers: TokenFactory) -> None:
    raise_alert(database, "pressure")
    incident = incidents(client, operator_headers)[0]
    for state in ("investigating", "resolved"):
        moved = client.post(f"/api/v1/incidents/{incident['id']}/state", json={"state": state},
                            headers=operator_headers)
        assert moved.status_code == 200 and moved.json()["state"] == state
    # A recurrence (a new alert, the old one having been resolved) within the cool-down reopens it.
    with database.transaction() as session:
        alert = alerts.get_alert(session=session, alert_id=incident["alert_ids"][0])
        alerts.resolve(session=session, alert_id=alert.id, actor="system:monitor")
    again = raise_alert(database, "pressure")
    listed = incidents(client, operator_headers)
    assert len(listed) == 1 and listed[0]["state"] == "open" and listed[0]["reopen_count"] == 1
    assert again in listed[0]["alert_ids"]

    # With no cool-down, a resolved incident stays resolved and the recurrence opens a new one.
    admin = make_headers("admin")
    rule = client.put("/api/v1/incidents/correlation-rule", headers=admin,
                      json={"keys": ["model_name", "model_version"], "window_seconds": 60, "cooldown_seconds": 0})
    assert rule.status_code == 200, rule.text
    raise_alert(database, "temperature")  # new key (rule changed): a new incident
    assert len(incidents(client, operator_headers)) == 2


def test_state_machine_and_bad_input(client: TestClient, database: Database, operator_headers: dict[str, str],
                                     make_headers: TokenFactory) -> None:
    raise_alert(database, "pressure")
    incident_id = incidents(client, operator_headers)[0]["id"]
    url = f"/api/v1/incidents/{incident_id}/state"
    no_reason = client.post(url, json={"state": "dismissed"}, headers=operator_headers)
    assert no_reason.status_code == 422 and no_reason.json()["error"]["details"]["field"] == "reason"
    dismissed = client.post(url, json={"state": "dismissed", "reason": "sensor recalibration"},
                            headers=operator_headers)
    assert dismissed.json()["dismissed_reason"] == "sensor recalibration"
    stuck = client.post(url, json={"state": "investigating"}, headers=operator_headers)
    assert stuck.status_code == 409
    assert client.post(url, json={"state": "nope"}, headers=operator_headers).status_code == 422
    assert client.post(url, json={"state": "resolved"}, headers=make_headers("agent")).status_code == 403
    assert client.get("/api/v1/incidents/inc_missing", headers=operator_headers).status_code == 404
    bad_rule = client.put("/api/v1/incidents/correlation-rule", headers=make_headers("admin"),
                          json={"keys": ["model_name", "password"]})
    assert bad_rule.status_code == 422 and "keys" in bad_rule.json()["error"]["message"]


def _rca(alert_id: str, **first: Any) -> dict[str, Any]:
    return {"kind": "rca_report", "summary": "pressure sensor drift after the v2 rollout", "hypotheses": [
        {"rank": 1, "title": "new sensor firmware", "confidence": 0.7,
         "evidence": [{"kind": "alert", "id": alert_id}, {"kind": "drift_report",
                                                           "query": {"model": "m", "version": 1}}], **first},
        {"rank": 2, "title": "seasonal change", "confidence": 0.2, "evidence": [{"kind": "alert", "id": alert_id}]},
    ]}


def test_timeline_entries_are_typed_and_evidence_must_exist(client: TestClient, database: Database,
                                                            make_headers: TokenFactory) -> None:
    from control_plane.registry.models import ModelVersion, RegisteredModel

    alert_id = raise_alert(database, "pressure")
    with database.transaction() as session:
        model = RegisteredModel(name="m", created_by="test")
        session.add(model)
        session.flush()
        version = ModelVersion(model_id=model.id, version=1, created_by="test")
        session.add(version)
        session.flush()
        version_id = version.id
    agent, viewer = make_headers("agent"), make_headers("viewer")
    incident_id = incidents(client, viewer)[0]["id"]
    url = f"/api/v1/incidents/{incident_id}/timeline"

    posted = client.post(url, json=_rca(alert_id), headers=agent)
    assert posted.status_code == 201, posted.text
    assert posted.json()["author"] == "agent:test-agent" and posted.json()["kind"] == "rca_report"
    triage = client.post(url, headers=agent, json={"kind": "triage_note", "summary": "looks like drift",
                                                    "assessed_severity": "critical",
                                                    "evidence": [{"kind": "alert", "id": alert_id},
                                                                 {"kind": "model_version", "id": version_id}]})
    assert triage.status_code == 201, triage.text
    with database.transaction(write=False) as session:
        cited = session.scalar(select(LineageEdge).where(LineageEdge.src_id == version_id,
                                                         LineageEdge.relation == "evidence_for"))
        assert cited is not None and cited.dst_id == incident_id
    comment = client.post(url, json={"kind": "comment", "text": "on it"}, headers=make_headers("operator"))
    assert comment.status_code == 201

    missing = client.post(url, json=_rca("al_nope"), headers=agent)
    assert missing.status_code == 422
    fields = [e["field"] for e in missing.json()["error"]["details"]["errors"]]
    assert fields == ["hypotheses[0].evidence[0]", "hypotheses[1].evidence[0]"]
    bad_query = _rca(alert_id)
    bad_query["hypotheses"][0]["evidence"][1]["query"]["version"] = 9
    assert "no version 9" in client.post(url, json=bad_query, headers=agent).json()["error"]["message"]
    inverted = client.post(url, json=_rca(alert_id, confidence=0.1), headers=agent)
    assert inverted.status_code == 422 and "higher confidence" in inverted.text
    duplicate_rank = client.post(url, json=_rca(alert_id, rank=2), headers=agent)
    assert duplicate_rank.status_code == 422 and "ranks" in duplicate_rank.text
    unknown_kind = client.post(url, json={"kind": "verdict", "text": "x"}, headers=agent)
    assert unknown_kind.status_code == 422
    unknown_run = client.post(url, json={"kind": "comment", "text": "x", "agent_run_id": "ar_nope"}, headers=agent)
    assert unknown_run.status_code == 422 and unknown_run.json()["error"]["details"]["field"] == "agent_run_id"
    assert client.post(url, json={"kind": "comment", "text": "x"}, headers=viewer).status_code == 403
    kinds = [e["kind"] for e in client.get(url, headers=viewer).json()]
    assert kinds == ["alert_joined", "rca_report", "triage_note", "comment"]

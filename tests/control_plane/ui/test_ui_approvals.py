"""The approval queue and incident pages: evidence shown, four eyes shown and enforced, decisions via the service."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from tests.conftest import TokenFactory
from tests.control_plane.approvals.conftest import proposal_state, propose, running_rollout  # noqa: F401
from tests.control_plane.approvals.test_proposals import _incident
from tests.control_plane.telemetry.conftest import baseline, dataset_id  # noqa: F401  (fixtures)
from tests.control_plane.ui.conftest import XSS_LABEL, csrf_of, sign_in_client
from tests.control_plane.ui.test_ui_browser import sign_in as browser_sign_in
from tests.control_plane.ui.test_ui_drift import drifted_telemetry


def bearer(make_headers: TokenFactory, role: str, name: str) -> str:
    """Return a new token's plaintext."""
    return make_headers(role, name=name)["Authorization"].removeprefix("Bearer ")


def agent_proposal(client: TestClient, database: Database, make_headers: TokenFactory, rollout: dict[str, Any],
                   expected_effect: str = "new waves stop; canary errors stop growing") -> dict[str, Any]:
    """An incident with an RCA report and an agent's pause proposal for the rollout."""
    agent = make_headers("agent", name="remediator")
    incident_id = _incident(client, database, agent)
    report = {"kind": "rca_report", "summary": "v1 errors in the canary", "hypotheses": [
        {"rank": 1, "title": "bad model version in the canary", "confidence": 0.8,
         "evidence": [{"kind": "rollout", "id": rollout["id"]}]},
        {"rank": 2, "title": "covariate drift", "confidence": 0.2,
         "evidence": [{"kind": "rollout", "id": rollout["id"]}]}]}
    posted = client.post(f"/api/v1/incidents/{incident_id}/timeline", json=report, headers=agent)
    assert posted.status_code == 201, posted.text
    return propose(client, agent, {"kind": "rollout.pause", "rollout_id": rollout["id"]}, incident_id=incident_id,
                   evidence=[{"kind": "rollout", "id": rollout["id"]}], risk="low", expected_effect=expected_effect)


def test_approver_sees_the_evidence_and_approves_once(
        client: TestClient, database: Database, make_headers: TokenFactory,
        running_rollout: dict[str, Any]) -> None:  # noqa: F811
    proposal = agent_proposal(client, database, make_headers, running_rollout, expected_effect=XSS_LABEL)
    sign_in_client(client, bearer(make_headers, "approver", "alice"))
    page = client.get("/ui/approvals")
    assert page.status_code == 200
    text = page.text
    assert "bad model version in the canary" in text and "confidence 80%" in text
    assert "rollout.pause" in text and running_rollout["id"] in text and "expires in" in text
    assert XSS_LABEL not in text and "&lt;script&gt;" in text
    assert f'action="/ui/approvals/{proposal["id"]}/approve"' in text

    csrf = csrf_of(text)
    url = f"/ui/approvals/{proposal['id']}"
    assert client.post(f"{url}/approve", data={"reason": "go"}).status_code == 403  # no CSRF token
    assert client.post(f"{url}/approve", data={"csrf_token": csrf, "reason": "  "}).status_code == 422
    done = client.post(f"{url}/approve", data={"csrf_token": csrf, "reason": "canary errors confirmed"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ui/approvals?done=approved"
    agent = make_headers("agent", name="reader")
    executed = proposal_state(client, agent, proposal["id"], "executed", "failed")
    assert executed["state"] == "executed" and executed["decided_by"] == "approver:alice"
    again = client.post(f"{url}/approve", data={"csrf_token": csrf, "reason": "twice"})
    assert again.status_code == 409 and "already" in again.text
    history = client.get("/ui/approvals").text
    assert "Nothing is waiting for approval." in history and "canary errors confirmed" in history


def test_four_eyes_is_shown_and_enforced(client: TestClient, make_headers: TokenFactory,
                                         running_rollout: dict[str, Any]) -> None:  # noqa: F811
    alice = bearer(make_headers, "approver", "alice")
    proposal = propose(client, {"Authorization": f"Bearer {alice}"},
                       {"kind": "rollout.abort", "rollout_id": running_rollout["id"]})
    sign_in_client(client, alice)
    page = client.get("/ui/approvals").text
    assert "You proposed this: four eyes means another approver decides." in page
    assert f'/ui/approvals/{proposal["id"]}/approve' not in page
    refused = client.post(f"/ui/approvals/{proposal['id']}/approve", data={"csrf_token": csrf_of(page),
                                                                           "reason": "mine"})
    assert refused.status_code == 403 and "four eyes" in refused.text

    sign_in_client(client, bearer(make_headers, "operator", "olga"))
    page = client.get("/ui/approvals").text
    assert "Only approvers and admins decide proposals." in page
    refused = client.post(f"/ui/approvals/{proposal['id']}/reject", data={"csrf_token": csrf_of(page),
                                                                          "reason": "no"})
    assert refused.status_code == 403

    sign_in_client(client, bearer(make_headers, "admin", "bob"))
    csrf = csrf_of(client.get("/ui/approvals").text)
    rejected = client.post(f"/ui/approvals/{proposal['id']}/reject", data={"csrf_token": csrf,
                                                                           "reason": "abort is too much"},
                           follow_redirects=False)
    assert rejected.status_code == 303
    assert client.get(f"/api/v1/proposals/{proposal['id']}",
                      headers={"Authorization": f"Bearer {alice}"}).json()["state"] == "rejected"


def test_incident_pages_show_the_timeline(client: TestClient, database: Database, make_headers: TokenFactory,
                                          running_rollout: dict[str, Any]) -> None:  # noqa: F811
    proposal = agent_proposal(client, database, make_headers, running_rollout)
    sign_in_client(client, bearer(make_headers, "viewer", "vera"))
    listing = client.get("/ui/incidents", params={"state": "open"})
    assert listing.status_code == 200 and "error rate" in listing.text
    page = client.get(f"/ui/incidents/{proposal['incident_id']}")
    assert page.status_code == 200
    assert "rca report" in page.text and "v1 errors in the canary" in page.text
    assert "alert joined" in page.text and "rollout.pause" in page.text
    assert client.get("/ui/incidents/inc_missing").status_code == 404


def test_a_new_proposal_appears_live_and_is_approved_in_the_browser(
        page: Page, live_server: str, client: TestClient, database: Database, make_headers: TokenFactory,
        running_rollout: dict[str, Any]) -> None:  # noqa: F811
    browser_sign_in(page, live_server, bearer(make_headers, "approver", "alice"))
    page.get_by_role("link", name="Approvals").click()
    expect(page.get_by_text("Nothing is waiting for approval.")).to_be_visible()
    page.wait_for_function("() => document.querySelector('[sse-connect]') && window.htmx")

    agent_proposal(client, database, make_headers, running_rollout)  # no reload: the event stream brings it in
    expect(page.get_by_text("bad model version in the canary")).to_be_visible(timeout=15_000)
    form = page.locator("form", has=page.get_by_role("button", name="Approve"))
    form.get_by_label("Reason to approve").fill("canary errors confirmed")
    form.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_have_text("Proposal approved.")
    page.reload()
    expect(page.get_by_role("cell", name="executed")).to_be_visible(timeout=30_000)


def test_the_queue_draws_the_drift_the_rca_cites(client: TestClient, database: Database, make_headers: TokenFactory,
                                                  admin_headers: dict[str, str],
                                                  baseline: Baseline, dataset_id: str) -> None:  # noqa: F811
    drifted_telemetry(database, baseline)
    client.post("/api/v1/models", json={"name": "sensor-clf"}, headers=admin_headers)
    assert client.post("/api/v1/models/sensor-clf/versions", json={"version": 1},
                       headers=admin_headers).status_code == 201
    assert client.post("/api/v1/fleet/devices", json={"id": "dev-0"}, headers=admin_headers).status_code == 201
    agent = make_headers("agent", name="remediator")
    incident = client.post("/api/v1/incidents", json={"title": "temperature shifted"}, headers=admin_headers).json()
    drift = {"kind": "drift_report", "query": {"model": "sensor-clf", "version": 1}}
    posted = client.post(f"/api/v1/incidents/{incident['id']}/timeline", headers=agent, json={
        "kind": "rca_report", "summary": "covariate drift", "hypotheses": [
            {"rank": 1, "title": "covariate drift in temperature", "confidence": 0.9, "evidence": [drift]}]})
    assert posted.status_code == 201, posted.text
    propose(client, agent, {"kind": "device.quarantine", "device_id": "dev-0"}, incident_id=incident["id"],
            evidence=[drift])
    sign_in_client(client, bearer(make_headers, "approver", "alice"))
    page = client.get("/ui/approvals").text
    assert page.count('<svg class="chart"') == 1  # drawn once, though cited twice
    assert "PSI of the most drifted features of sensor-clf v1" in page
    assert re.search(r"<title>temperature: PSI [0-9.]+ \(major\)", page)

"""An approver runs the incident-to-rollback flow in a real browser, against real edge agents and a real broker.

v2 reaches two edge agents; an alert opens an incident; the agent role reports and proposes a rollback; the
approver signs in to the web UI, reads the evidence, approves with a reason; the control plane rolls the devices
back to v1 exactly once and the page shows the outcome.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select

from agents.control_plane_client import ControlPlaneClient
from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.approvals.schemas import ProposalCreate
from control_plane.fleet.models import Rollout
from control_plane.incidents.schemas import RcaReport
from control_plane.mqtt.broker import free_port
from tests.control_plane.fleet.conftest import FleetModels, wait_for
from tests.e2e.test_approval_rollback import Served, fleet_models, private_broker, served  # noqa: F401
from tests.e2e.test_ota_rollout import DEVICES, _device_health, _start_agent, _upload

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


@pytest.fixture
def page(browser: Browser) -> Any:
    """A browser page that fails the test on any dialog or console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("dialog", lambda dialog: (problems.append(dialog.message), dialog.dismiss()))
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield opened
    context.close()
    assert problems == [], problems


def _v2_everywhere(served: Served, fleet_models: FleetModels, tmp_path: Path,  # noqa: F811
                   ports: dict[str, int]) -> tuple[list[subprocess.Popen[bytes]], dict[str, Any]]:
    cp = served.cp
    _upload(cp, "digits", 1, fleet_models.v1_int8, "int8")
    _upload(cp, "digits", 2, fleet_models.v2_int8, "int8")
    agents = []
    for device in DEVICES:
        provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "e2e"})
        (tmp_path / "agents" / device).mkdir(parents=True)
        agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
    wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "e2e"})),
             timeout=40, interval=0.2)
    for version in (1, 2):
        rollout = cp.call("POST", "/fleet/deployments", json={"model": "digits", "version": version,
                                                             "selector": {"group": "e2e"}})
        assert cp.wait_state(rollout["id"], "succeeded", "aborted", "failed")["state"] == "succeeded"
    wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values()))
    return agents, rollout


def test_approver_rolls_back_in_the_browser(served: Served, fleet_models: FleetModels, tmp_path: Path,  # noqa: F811
                                            page: Page) -> None:
    ports = {device: free_port() for device in DEVICES}
    agents, second = _v2_everywhere(served, fleet_models, tmp_path, ports)
    agent = ControlPlaneClient(served.cp.url, served.tokens["agent"])
    try:
        with served.database.transaction() as session:
            alert, _ = alerts.raise_alert(session=session, actor="system:monitor", request=AlertRaise(
                fingerprint="digits-2-errors", check=AlertCheck.ERROR_RATE, severity=Severity.CRITICAL,
                title="error rate 12% after v2", model_name="digits", model_version=2,
                deployment_id=second["deployment_id"], rollout_id=second["id"]))
        incident = agent.list_incidents().items[0]
        agent.post(incident.id, RcaReport.model_validate({
            "kind": "rca_report", "summary": "v2 regressed", "hypotheses": [{
                "rank": 1, "title": "v2 model regression", "confidence": 0.8,
                "evidence": [{"kind": "alert", "id": alert.id}, {"kind": "rollout", "id": second["id"]}]}]}))
        proposal = agent.propose(ProposalCreate.model_validate({
            "action": {"kind": "rollout.rollback", "rollout_id": second["id"], "strategy": {"kind": "all_at_once"}},
            "incident_id": incident.id, "evidence": [{"kind": "alert", "id": alert.id}],
            "expected_effect": "both devices back on v1", "risk": "medium"}))

        page.goto(f"{served.cp.url}/ui/approvals")
        page.get_by_label("API token").fill(served.tokens["approver"])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Approval queue")).to_be_visible()
        card = page.locator(f"#proposal-{proposal.id}")
        expect(card.get_by_text("v2 model regression")).to_be_visible()
        expect(card.get_by_text("both devices back on v1")).to_be_visible()
        card.get_by_label("Reason to approve").fill("error rate confirmed on both devices")
        card.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("status")).to_have_text("Proposal approved.")

        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 1} for p in ports.values()),
                 timeout=60)
        page.reload()
        expect(page.get_by_role("cell", name="executed")).to_be_visible(timeout=20_000)
        page.get_by_role("link", name=proposal.id).click()
        expect(page.get_by_text("executed", exact=False).first).to_be_visible()
        with served.database.transaction(write=False) as session:
            rollbacks = session.scalar(select(func.count()).select_from(Rollout).where(
                Rollout.rollback_of == second["id"]))
        assert rollbacks == 1
    finally:
        agent.close()
        for process in agents:
            process.terminate()
        for process in agents:
            process.wait(10)

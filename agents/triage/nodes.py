"""Triage nodes: find the incident the alert joined, decide investigate or suppress, write the note once."""

from __future__ import annotations

from typing import Any

from agents.rca.evidence import condense
from agents.runs import Deps, ensure_agent_run, post_once
from agents.triage.state import TriageState
from control_plane.incidents.schemas import TriageNote

FLAPPING_OCCURRENCES = 5
DRIFT_CHECKS = {"feature_drift", "prediction_drift"}


def assess(state: TriageState, deps: Deps) -> dict[str, Any]:
    """Decide from the alert, its incident and last week's same hour (no side effect)."""
    started_at = deps.clock()
    alert = deps.tools.read.get_alert(state["alert_id"])
    if not alert.ok:
        raise RuntimeError(f"alert {state['alert_id']} unreadable: {alert.error}")
    data = alert.data
    incidents = deps.client.list_incidents(model=data["model_name"], limit=100).items
    incident = next((i for i in incidents if state["alert_id"] in i.alert_ids), None)
    if incident is None:
        raise RuntimeError(f"alert {state['alert_id']} joined no incident yet")
    decision, reason = "investigate", "new alert"
    if int(data["occurrences"]) >= FLAPPING_OCCURRENCES and incident.reopen_count > 0:
        decision, reason = "suppress", f"flapping: {data['occurrences']} occurrences, reopened {incident.reopen_count}x"
    elif data["check"] in DRIFT_CHECKS and data.get("feature"):
        now = deps.clock()
        week_ago = condense(deps.tools.read.get_drift_report(
            data["model_name"], int(data["model_version"]), hours=deps.lookback_hours, until=now - 7 * 86400),
            {"weeks_ago": 1})
        current = condense(deps.tools.read.get_drift_report(
            data["model_name"], int(data["model_version"]), hours=deps.lookback_hours, until=now), {})
        harmful = current is not None and (current.error_rate or 0) >= 0.03
        if week_ago is not None and data["feature"] in week_ago.drifted_names and not harmful:
            decision, reason = "suppress", f"seasonal: {data['feature']} shifted the same way one week ago, no harm"
    return {"incident_id": incident.id, "occurrences": int(data["occurrences"]), "decision": decision,
            "reason": reason, "severity": data["severity"], "started_at": started_at}


def write_note(state: TriageState, deps: Deps) -> dict[str, Any]:
    """Post the triage note once per (alert, occurrence count)."""
    run_key = f"triage:{state['alert_id']}:{state['occurrences']}"
    run_id = ensure_agent_run(deps, "triage", run_key, state["decision"], {"reason": state["reason"]},
                              started_at=state.get("started_at"))
    note = TriageNote.model_validate({
        "kind": "triage_note", "agent_run_id": run_id, "assessed_severity": state["severity"],
        "summary": f"[templated] {state['decision']}: {state['reason']}",
        "evidence": [{"kind": "alert", "id": state["alert_id"]}],
        "next_steps": ["root-cause analysis"] if state["decision"] == "investigate" else ["monitor"]})
    return {"note_entry_id": post_once(deps, state["incident_id"], note)}

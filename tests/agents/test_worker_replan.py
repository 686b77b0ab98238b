"""The worker coalesces a burst of same-kind alerts into a pending proposal and re-plans one refused as stale."""

from __future__ import annotations

import json
from pathlib import Path

from agents.control_plane_client import ControlPlaneClient
from agents.worker import MAX_REPROPOSALS, Cursor
from control_plane.alerts.schemas import AlertCheck, Severity
from control_plane.approvals.schemas import ProposalState
from control_plane.auth.roles import Role
from control_plane.db.session import Database
from tests.agents.harness import SimFleet, token
from tests.agents.test_worker import _notes, _worker
from tests.control_plane.events.conftest import Served
from tests.control_plane.fleet.conftest import wait_for


def _faulty_fleet(fleet: SimFleet) -> None:
    fleet.devices("north", "d1", "d2", "d3", "d4")
    for device in ("d1", "d2", "d3", "d4"):
        fleet.send(device, errors=8 if device == "d3" else 0)


def _timeline(fleet: SimFleet) -> list[dict[str, object]]:
    incidents = fleet.call("GET", "/incidents")["items"]
    assert len(incidents) == 1
    return list(fleet.call("GET", f"/incidents/{incidents[0]['id']}/timeline"))


def test_a_burst_of_drift_alerts_costs_one_pass_and_the_alert_behind_it_is_analysed_next(
        served: Served, fleet: SimFleet, database: Database, tmp_path: Path) -> None:
    _faulty_fleet(fleet)
    with _worker(served, database, tmp_path, []) as worker:
        fleet.alert(AlertCheck.ERROR_RATE, "error rate up")
        wait_for(lambda: len(_notes(fleet, "proposal")) == 1, timeout=30)
        for index in range(8):  # one alert per drifted feature, as a drift monitor raises them
            fleet.alert(AlertCheck.FEATURE_DRIFT, f"f{index} drifted", feature=f"f{index}",
                        severity=Severity.WARNING)
        latency = fleet.alert(AlertCheck.LATENCY, "latency up", severity=Severity.WARNING)

        def latency_analysed() -> bool:
            noted = any(latency in json.dumps(e) for e in _notes(fleet, "triage_note"))
            return noted and worker.rca_passes >= 3

        wait_for(latency_analysed, timeout=60)
        # Passes, not seconds: the error-rate alert, the first drift alert (a new kind), the latency alert;
        # the old worker ran one per drift alert (10). A monitor's own error-rate alert may join later: coalesced.
        assert worker.rca_passes == 3 and worker.coalesced >= 7
        assert len(_notes(fleet, "proposal")) == 1


def _approver(served: Served, database: Database) -> ControlPlaneClient:
    return ControlPlaneClient(served.url, token(database, "approver", Role.APPROVER))


def _handled_up_to_head(client: ControlPlaneClient, tmp_path: Path) -> None:
    head = client.head()
    wait_for(lambda: (Cursor(tmp_path / "cursor.json").load() or 0) >= head, timeout=30)


def test_a_proposal_refused_as_stale_is_proposed_again_fresh_at_most_twice(
        served: Served, fleet: SimFleet, database: Database, tmp_path: Path) -> None:
    _faulty_fleet(fleet)
    with _worker(served, database, tmp_path, []), _approver(served, database) as approver:
        fleet.alert(AlertCheck.ERROR_RATE, "error rate up")
        keys: list[str] = []
        for attempt in range(MAX_REPROPOSALS + 1):
            wait_for(lambda: len(approver.list_proposals(state=[ProposalState.PENDING]).items) == 1, timeout=30)
            (pending,) = approver.list_proposals(state=[ProposalState.PENDING]).items
            keys.append(pending.idempotency_key)
            approver.reject(pending.id, f"stale proposal: the world changed since it was made (attempt {attempt})")
        _handled_up_to_head(approver, tmp_path)
        assert not approver.list_proposals(state=[ProposalState.PENDING]).items  # bounded: no fourth one
        everything = approver.list_proposals().items
        assert len(everything) == MAX_REPROPOSALS + 1 and len(set(keys)) == MAX_REPROPOSALS + 1
        assert keys[1].endswith(".r1") and keys[2].endswith(".r2")
        assert len({(p.kind, json.dumps(p.params, sort_keys=True)) for p in everything}) == 1  # the same remedy


def test_a_proposal_a_person_rejected_for_another_reason_is_not_proposed_again(
        served: Served, fleet: SimFleet, database: Database, tmp_path: Path) -> None:
    _faulty_fleet(fleet)
    with _worker(served, database, tmp_path, []), _approver(served, database) as approver:
        fleet.alert(AlertCheck.ERROR_RATE, "error rate up")
        wait_for(lambda: len(approver.list_proposals(state=[ProposalState.PENDING]).items) == 1, timeout=30)
        (pending,) = approver.list_proposals(state=[ProposalState.PENDING]).items
        approver.reject(pending.id, "wrong device: d3 is being repaired")
        _handled_up_to_head(approver, tmp_path)
        assert not approver.list_proposals(state=[ProposalState.PENDING]).items
        assert len(approver.list_proposals().items) == 1

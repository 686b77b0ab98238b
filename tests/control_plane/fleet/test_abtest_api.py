"""A/B tests through the API on both databases: refusals, per-arm manifests, labels, the horizon, the promotion."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from sqlalchemy import select

from control_plane.audit.models import AuditEntry
from control_plane.fleet.abtest_models import ExperimentAssignment
from control_plane.fleet.abtest_stats import assign, required_per_arm
from control_plane.fleet.models import Rollout, RolloutTarget
from control_plane.telemetry.models import TelemetryWindowRow
from tests.conftest import TokenFactory
from tests.control_plane.approvals.conftest import proposal_state
from tests.control_plane.fleet.test_rollouts import Fleet, fleet  # noqa: F401 - fixture by name

DEVICES = ["d0", "d1", "d2", "d3"]
DESIGN = {"mde": 0.2, "baseline_rate": 0.7, "expected_samples_per_device": 100}
REQUIRED = required_per_arm(0.7, 0.2, 0.05, 0.8)


def _salt() -> str:
    """Return the first of a fixed list of salts that puts two of the four devices in each arm."""
    for index in range(100):
        arms = [arm for arm, _ in assign(f"salt-{index}", DEVICES, [0.5, 0.5]).values()]
        if sorted(arms) == [0, 0, 1, 1]:
            return f"salt-{index}"
    raise AssertionError("no balanced salt")


def _ab(fleet: Fleet, **design: Any) -> Any:  # noqa: F811
    body = {"model": "digits", "selector": {"group": "lab"}, "strategy": {"kind": "ab", "ab": {
        "arms": [{"version": 1, "weight": 0.5}, {"version": 2, "weight": 0.5}], **DESIGN, **design}}}
    return fleet.client.post("/api/v1/fleet/deployments", headers=fleet.headers, json=body)


def _windows(fleet: Fleet, device: str, version: int, count: int, first_seq: int) -> None:  # noqa: F811
    now = time.time()
    with fleet.database.transaction() as session:
        session.add_all([TelemetryWindowRow(
            device_id=device, window_seq=first_seq + i, model_name="digits", model_version=version,
            baseline_id="b" * 64, window_start=now + i, window_end=now + i + 1, received_at=now, n=10, calls=1,
            errors=0, sketch="[[],[]]") for i in range(count)])


def _label(fleet: Fleet, device: str, seqs: range, correct: int, total: int = 10) -> None:  # noqa: F811
    labels = [{"device_id": device, "window_seq": seq, "confusion": [[1, 1, correct], [1, 2, total - correct]]}
              for seq in seqs]
    response = fleet.client.post("/api/v1/telemetry/labels", headers=fleet.headers, json={"labels": labels})
    assert response.status_code == 200 and response.json()["stored"] == len(labels), response.text


def test_ab_split_too_small_is_refused_with_the_numbers(fleet: Fleet) -> None:  # noqa: F811
    response = _ab(fleet, salt=_salt(), expected_samples_per_device=10)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "too small" in error["message"], error
    assert (error["details"]["devices_per_arm"], error["details"]["expected_samples_per_arm"],
            error["details"]["required_per_arm"]) == ([2, 2], [20, 20], REQUIRED)
    with fleet.database.transaction(write=False) as session:
        assert session.scalar(select(Rollout.id)) is None  # nothing started
    for strategy, code in (({"kind": "ab"}, 422),
                           ({"kind": "waves", "waves": [100], "ab": {"arms": [], "mde": 0.1}}, 422),
                           ({"kind": "ab", "ab": {"arms": [{"version": 1, "weight": 0.5}, {"version": 9,
                                                                                        "weight": 0.5}],
                                                  **DESIGN}}, 404)):
        response = fleet.client.post("/api/v1/fleet/deployments", headers=fleet.headers, json={
            "model": "digits", "selector": {"group": "lab"}, "strategy": strategy})
        assert response.status_code == code, (strategy, response.text)
    response = fleet.client.post("/api/v1/fleet/deployments", headers=fleet.headers, json={
        "model": "digits", "version": 1, "selector": {"group": "lab"},
        "strategy": {"kind": "ab", "ab": {"arms": [{"version": 1, "weight": 0.5}, {"version": 2, "weight": 0.5}],
                                          **DESIGN}}})
    assert response.status_code == 422 and "strategy.ab.arms" in response.text


def test_ab_test_ships_each_arm_its_version_decides_at_the_horizon_and_proposes_promotion(
        fleet: Fleet, make_headers: TokenFactory) -> None:  # noqa: F811
    salt = _salt()
    response = _ab(fleet, salt=salt)
    assert response.status_code == 201, response.text
    rollout = response.json()
    assert rollout["wave_plan"] == [4] and rollout["progress"]["issued"] == 4
    expected = {d: arm for d, (arm, _) in assign(salt, DEVICES, [0.5, 0.5]).items()}
    for device in DEVICES:
        payload = json.loads(base64.b64decode(json.loads(fleet.latest(device).envelope)["payload"]))
        assert payload["model"]["version"] == expected[device] + 1 and payload["rollout_id"] == rollout["id"]
    with fleet.database.transaction(write=False) as session:
        stored = {a.device_id: a.arm for a in session.scalars(select(ExperimentAssignment))}
        artifacts = {t.device_id: t.artifact_id for t in session.scalars(select(RolloutTarget))}
    assert stored == expected and len(set(artifacts.values())) == 2

    url = f"/api/v1/experiments/{rollout['id']}"  # by rollout id, as the rollout view links it
    read = fleet.client.get(url, headers=fleet.headers).json()
    experiment_id = read["id"]
    assert read["state"] == "running" and read["required_per_arm"] == REQUIRED and not read["horizon_reached"]
    assert [(a["version"], a["devices"], a["n"]) for a in read["arms"]] == [(1, 2, 0), (2, 2, 0)]
    assert read["winner"] is None and "horizon not reached" in read["reason"]

    # Arm 0 (v1) is right 6 times in 10, arm 1 (v2) 9 in 10; labels of another version's windows do not count.
    per_device = -(-REQUIRED // 20) + 1  # windows of 10 per device so each arm passes the horizon
    for device, arm in expected.items():
        _windows(fleet, device, arm + 1, per_device, 0)
        _windows(fleet, device, 3 - (arm + 1), 2, 1000)
        _label(fleet, device, range(2), 6 if arm == 0 else 9)
        _label(fleet, device, range(1000, 1002), 10 if arm == 0 else 0)
    # Short of the horizon: a significant gap already, but no decision (fixed horizon, no peeking).
    early = fleet.client.post(f"{url}/evaluate", headers=fleet.headers).json()
    assert [a["n"] for a in early["arms"]] == [40, 40] and early["comparisons"][0]["p_value"] < 0.01
    assert early["state"] == "running" and early["winner"] is None and not early["comparisons"][0]["significant"]
    for device, arm in expected.items():
        _label(fleet, device, range(2, per_device), 6 if arm == 0 else 9)
    read = fleet.client.get(url, headers=fleet.headers).json()
    assert read["horizon_reached"] and read["state"] == "running" and read["winner"] == {"arm": 1, "version": 2}
    control, treatment = read["arms"]
    assert control["n"] >= REQUIRED and control["rate"] == 0.6 and treatment["rate"] == 0.9
    assert control["n_total"] == 2 * per_device * 10 and control["ci_low"] < 0.6 < control["ci_high"]
    comparison = read["comparisons"][0]
    assert comparison["method"] == "two_proportion_z" and comparison["p_value"] < 1e-3 and comparison["significant"]
    assert comparison["ci_low"] < 0.3 < comparison["ci_high"]

    evaluated = fleet.client.post(f"{url}/evaluate", headers=fleet.headers)
    assert evaluated.status_code == 200, evaluated.text
    decided = evaluated.json()
    assert decided["state"] == "decided" and decided["winner"] == {"arm": 1, "version": 2} and decided["proposal_id"]
    # Frozen: later labels cannot turn the decision (v1's windows relabelled as perfect).
    _label(fleet, expected_device(expected, 0), range(per_device), 10)
    again = fleet.client.post(f"{url}/evaluate", headers=fleet.headers).json()
    assert again["winner"] == {"arm": 1, "version": 2} and again["proposal_id"] == decided["proposal_id"]

    proposal = fleet.client.get(f"/api/v1/proposals/{decided['proposal_id']}", headers=fleet.headers).json()
    assert proposal["kind"] == "experiment.promote" and proposal["state"] == "pending"
    assert proposal["params"]["version"] == 2 and proposal["proposer"] == "agent:ab-experiments"
    approver = make_headers("approver", name="boss")
    approved = fleet.client.post(f"/api/v1/proposals/{proposal['id']}/approve", headers=approver,
                                 json={"reason": "v2 won the A/B test"})
    assert approved.status_code == 200, approved.text
    done = proposal_state(fleet.client, fleet.headers, proposal["id"], "executed", "failed")
    assert done["state"] == "executed", done
    promotion = fleet.rollout(done["result"]["promotion_rollout_id"])
    assert promotion["model"] == {"name": "digits", "version": 2} and promotion["wave_plan"] == [2, 4]
    final = fleet.client.get(f"/api/v1/experiments/{experiment_id}", headers=fleet.headers).json()
    assert final["state"] == "promoted" and final["promotion_rollout_id"] == promotion["id"]
    with fleet.database.transaction(write=False) as session:
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.resource_id == experiment_id)
                                       .order_by(AuditEntry.seq)))
    assert actions == ["experiment.create", "experiment.decided", "experiment.promoted"]
    # Promoting twice is refused.
    response = fleet.client.post("/api/v1/proposals", headers=fleet.headers, json={
        "action": {"kind": "experiment.promote", "experiment_id": experiment_id, "version": 2},
        "expected_effect": "again"})
    assert response.status_code == 409, response.text


def expected_device(expected: dict[str, int], arm: int) -> str:
    """Return a device of an arm."""
    return next(device for device, value in expected.items() if value == arm)


def test_no_difference_at_the_horizon_is_inconclusive_and_an_aborted_test_stops(fleet: Fleet) -> None:  # noqa: F811
    salt = _salt()
    rollout = _ab(fleet, salt=salt).json()
    url = f"/api/v1/experiments/{rollout['id']}"
    per_device = -(-REQUIRED // 20) + 1
    for device, (arm, _) in assign(salt, DEVICES, [0.5, 0.5]).items():
        _windows(fleet, device, arm + 1, per_device, 0)
        _label(fleet, device, range(per_device), 8)
    read = fleet.client.post(f"{url}/evaluate", headers=fleet.headers).json()
    assert read["state"] == "inconclusive" and read["winner"] is None and read["proposal_id"] is None
    assert "no significant difference" in read["reason"] and read["comparisons"][0]["p_value"] == 1.0
    assert fleet.client.get("/api/v1/proposals", headers=fleet.headers).json()["total"] == 0

    second = _ab(fleet, salt=salt).json()
    aborted = fleet.client.post(f"/api/v1/fleet/rollouts/{second['id']}/abort", headers=fleet.headers,
                                json={"reason": "wrong group"})
    assert aborted.status_code == 200, aborted.text
    stopped = fleet.client.post(f"/api/v1/experiments/{second['id']}/evaluate", headers=fleet.headers).json()
    assert stopped["state"] == "stopped" and "aborted" in stopped["reason"] and stopped["winner"] is None
    listed = fleet.client.get("/api/v1/experiments", params={"state": "stopped"}, headers=fleet.headers).json()
    assert [e["rollout_id"] for e in listed] == [second["id"]]

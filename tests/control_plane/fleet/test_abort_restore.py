"""Abort leaves no trap: devices that never confirmed the rollout are offered their previous model, or nothing."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from sqlalchemy import update

from control_plane.db.base import utcnow
from control_plane.fleet import events, rollouts
from control_plane.fleet.bridge import mark_for_republish
from control_plane.fleet.models import Device, Manifest
from tests.control_plane.fleet.test_rollouts import Fleet, _status, fleet

__all__ = ["fleet"]  # the fixture, re-exported so pytest finds it here


def _report(fleet: Fleet, message: tuple[str, bytes]) -> None:
    with fleet.database.transaction() as session:
        assert events.apply_message(session, *message).accepted


def _payload(fleet: Fleet, device_id: str) -> dict[str, object]:
    return dict(json.loads(base64.b64decode(json.loads(fleet.latest(device_id).envelope)["payload"])))


def test_abort_restores_the_previous_desired_state_of_every_unconfirmed_device(fleet: Fleet) -> None:
    first = fleet.deploy(1, ["d0", "d1"])["id"]
    fleet.report("d0", "activated")
    fleet.report("d1", "activated")
    v1_sha = fleet.rollout(first)["artifact_sha256"]
    second = fleet.deploy(2, ["d0", "d1", "d2"])["id"]
    fleet.report("d0", "activated")  # confirmed: keeps v2 (a rollback, not an abort, takes it back)
    fleet.report("d1", "downloading")  # unconfirmed, had v1 before
    aborted_manifest = fleet.latest("d1")  # d2: unconfirmed, had nothing before
    sequences = {d: fleet.latest(d).sequence for d in ("d0", "d1", "d2")}

    response = fleet.client.post(f"/api/v1/fleet/rollouts/{second}/abort", json={"reason": "bad canary"},
                                 headers=fleet.headers)
    assert response.status_code == 200 and response.json()["state"] == "aborted"
    assert fleet.targets(second) == {"d0": "activated", "d1": "cancelled", "d2": "cancelled"}
    assert fleet.latest("d0").sequence == sequences["d0"]
    restore = _payload(fleet, "d1")
    assert restore["sequence"] == sequences["d1"] + 1 and restore["model"] == {"name": "digits", "version": 1}
    assert restore["artifact"]["sha256"] == v1_sha  # type: ignore[index]
    cleared = fleet.latest("d2")
    assert cleared.sequence == sequences["d2"] + 1 and cleared.envelope == "" and cleared.published_at is None
    assert fleet.client.get("/api/v1/fleet/devices/d2/manifest", headers=fleet.headers).status_code == 404

    # A late report about the aborted manifest changes nothing; the restore manifest's activation is recorded.
    _report(fleet, _status("d1", aborted_manifest, "activated"))
    _report(fleet, _status("d1", fleet.latest("d1"), "activated"))
    assert fleet.targets(second)["d1"] == "cancelled" and fleet.rollout(second)["state"] == "aborted"
    with fleet.database.transaction(write=False) as session:
        d1 = session.get(Device, "d1")
        assert d1 is not None and d1.desired_sequence == restore["sequence"]
        assert d1.active_artifact_id == d1.desired_artifact_id


def test_abort_does_not_touch_a_device_a_newer_rollout_owns(fleet: Fleet) -> None:
    first = fleet.deploy(1, ["d0", "d1"], kind="waves", waves=[50, 100])["id"]
    fleet.report("d0", "received")
    fleet.deploy(2, ["d0"])  # takes d0 over; `first` is still open for d1
    newest = fleet.latest("d0").sequence
    assert fleet.client.post(f"/api/v1/fleet/rollouts/{first}/abort", json={},
                             headers=fleet.headers).status_code == 200
    assert fleet.latest("d0").sequence == newest


def test_the_health_gate_abort_restores_too_and_a_reconnect_republishes_it(fleet: Fleet) -> None:
    first = fleet.deploy(1, ["d0", "d1"])["id"]
    fleet.report("d0", "activated")
    fleet.report("d1", "activated")
    second = fleet.deploy(2, ["d0", "d1"], kind="waves", waves=[50, 100], wave_timeout_s=30,
                          failure_threshold=0.0)["id"]
    aborted_sequence = fleet.latest("d0").sequence
    with fleet.database.transaction() as session:  # d0 never answers: its wave times out and the gate aborts
        rollouts.step(session, fleet.factory, second, utcnow() + timedelta(seconds=31))
    assert fleet.rollout(second)["state"] == "aborted"
    assert fleet.targets(second) == {"d0": "timed_out", "d1": "cancelled"}
    restore = _payload(fleet, "d0")
    assert restore["sequence"] == aborted_sequence + 1 and restore["model"] == {"name": "digits", "version": 1}
    assert fleet.rollout(first)["state"] == "succeeded"

    # The broker may lose retained messages: a reconnect queues the restore manifest again until d0 reports on it.
    with fleet.database.transaction() as session:
        session.execute(update(Manifest).values(published_at=utcnow()))
        assert mark_for_republish(session) == 1
    _report(fleet, _status("d0", fleet.latest("d0"), "activated"))
    with fleet.database.transaction() as session:
        session.execute(update(Manifest).values(published_at=utcnow()))
        assert mark_for_republish(session) == 0

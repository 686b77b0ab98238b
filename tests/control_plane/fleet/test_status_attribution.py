"""Only attributable status moves a rollout; poison status and presence are refused one by one, never raised."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import func, select

from control_plane.fleet import events, rollouts
from control_plane.fleet.models import DeviceEvent
from tests.control_plane.fleet.test_rollouts import Fleet, _status, fleet

__all__ = ["fleet"]  # the fixture, re-exported so pytest finds it here


def _apply(fleet: Fleet, *messages: tuple[str, bytes]) -> list[events.Outcome]:
    with fleet.database.transaction() as session:
        outcomes = events.apply_batch(session, list(messages))
        for rollout_id in {o.rollout_id for o in outcomes if o.rollout_id}:
            rollouts.step(session, fleet.factory, rollout_id)
    return outcomes


def _body(device_id: str, **fields: Any) -> bytes:
    body = {"schema": "edgeloop.status/v1", "event_id": str(uuid.uuid4()), "device_id": device_id,
            "rollout_id": None, "sequence": None, "state": "activated", "reason": None, "model": None,
            "slot": "a", "ts": 1.0, **fields}
    return json.dumps(body).encode()


def test_a_status_that_names_no_manifest_changes_no_rollout(fleet: Fleet) -> None:
    rollout_id = fleet.deploy(1, ["d0"])["id"]
    topic = "edgeloop/devices/d0/status"
    outcomes = _apply(
        fleet,
        (topic, _body("d0")),  # no rollout, no sequence: once charged to "the manifest we sent last"
        (topic, _body("d0", rollout_id=rollout_id)),  # right rollout, no sequence
        (topic, _body("d0", rollout_id=rollout_id, sequence=99)),  # a manifest this device was never sent
        (topic, _body("d0", rollout_id="ro_other", sequence=1)),
        (topic, _body("d0", state="rejected", reason="malformed")),
    )
    assert all(o.accepted and o.rollout_id is None for o in outcomes)
    assert fleet.targets(rollout_id) == {"d0": "issued"}
    assert fleet.rollout(rollout_id)["state"] == "in_progress"
    stored = fleet.client.get("/api/v1/fleet/devices/d0/events", headers=fleet.headers).json()
    assert len(stored) == 5  # every one of them is kept as a device event


def test_a_finished_target_never_moves_back_for_the_same_manifest(fleet: Fleet) -> None:
    rollout_id = fleet.deploy(1, ["d0", "d1"])["id"]
    fleet.report("d0", "activated")
    manifest = fleet.latest("d0")
    _apply(fleet, _status("d0", manifest, "rejected", "replayed_sequence"),  # the retained copy after a restart
           _status("d0", manifest, "failed", "download_failed"), _status("d0", manifest, "downloading"))
    assert fleet.targets(rollout_id)["d0"] == "activated"
    fleet.report("d1", "failed", "self_test_failed")
    _apply(fleet, _status("d1", fleet.latest("d1"), "rejected", "malformed"))
    assert fleet.targets(rollout_id)["d1"] == "failed"
    # A trial that reverts at boot is still news about the same install.
    _apply(fleet, _status("d0", manifest, "reverted", "trial_crashed"))
    assert fleet.targets(rollout_id)["d0"] == "reverted"


def test_payload_device_must_match_the_topic(fleet: Fleet) -> None:
    rollout_id = fleet.deploy(1, ["d0", "d1"])["id"]
    forged = _status("d1", fleet.latest("d1"), "activated")[1]
    outcome = _apply(fleet, ("edgeloop/devices/d0/status", forged))[0]
    assert not outcome.accepted and outcome.reason == "device_id differs from the topic's device"
    assert fleet.targets(rollout_id)["d1"] == "issued"


def test_poison_messages_are_refused_one_by_one_and_the_rest_applied(fleet: Fleet) -> None:
    fleet.deploy(1, ["d0", "d1"])
    status, presence = "edgeloop/devices/d0/status", "edgeloop/devices/d0/presence"
    deep = b'{"schema": "edgeloop.status/v1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    poison = [
        (status, _body("d0", sequence=2**64)),
        (status, _body("d0", sequence=2**63)),
        (status, _body("d0", sequence=-1)),
        (status, _body("d0", event_id="nul\x00id")),
        (status, _body("d0", reason="bad\x00reason")),
        (status, _body("d0", event_id="\ud800-lone-surrogate")),
        (status, _body("d0", model={"name": "\udfff"})),
        (status, _body("d0", model={"name": "m\x00"})),
        (status, _body("d0", model={"n": [[[[[[[[[[[1]]]]]]]]]]]})),
        (status, deep),
        (status, b"{" + b" " * 100_000 + b"}"),
        (status, _body("d0", state="x" * 10_000)),
        ("edgeloop/devices/" + "x" * 300 + "/status", _body("x" * 300)),
        ("edgeloop/devices/d\x00/status", _body("d\x00")),
        (presence, json.dumps({"schema": "edgeloop.presence/v1", "device_id": "d0", "online": True,
                               "model": {"name": "\x00"}}).encode()),
        (presence, json.dumps({"schema": "edgeloop.presence/v1", "device_id": "d0", "online": True,
                               "slot": "a\x00"}).encode()),
    ]
    good = [("edgeloop/devices/d1/status", _status("d1", fleet.latest("d1"), "received")[1]),
            (status, _body("d0", state="received", sequence=2**63 - 1))]
    outcomes = _apply(fleet, good[0], *poison, good[1])
    assert [o.accepted for o in outcomes] == [True] + [False] * len(poison) + [True]
    with fleet.database.transaction(write=False) as session:
        stored = session.scalar(select(func.count()).select_from(DeviceEvent))
        refused = session.scalar(select(func.count()).select_from(DeviceEvent).where(DeviceEvent.accepted.is_(False)))
    assert (stored, refused) == (2 + len(poison), len(poison))
    assert fleet.targets(fleet.latest("d1").rollout_id or "")["d1"] == "received"

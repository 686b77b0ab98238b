"""Blue-green in the control plane on both databases: stage-only manifests, signed cut-overs, the report."""

from __future__ import annotations

import base64
import json
import uuid

from sqlalchemy import select

from control_plane.fleet import bluegreen, events
from control_plane.fleet.models import Cutover
from control_plane.signing import verify_signature
from tests.control_plane.fleet.test_rollouts import Fleet, fleet  # noqa: F401 - fixture by name


def _say(setup: Fleet, device_id: str, rollout_id: str, sequence: int, state: str, reason: str | None = None,
         version: int = 2) -> None:
    body = {"schema": "edgeloop.status/v1", "event_id": str(uuid.uuid4()), "device_id": device_id,
            "rollout_id": rollout_id, "sequence": sequence, "state": state, "reason": reason,
            "model": {"name": "digits", "version": version}, "slot": "b", "ts": 2.0}
    with setup.database.transaction() as session:
        assert events.apply_message(session, f"edgeloop/devices/{device_id}/status", json.dumps(body).encode()).accepted


def test_blue_green_stages_then_cuts_over_and_back_with_signed_commands(fleet: Fleet) -> None:  # noqa: F811
    first = fleet.deploy(1, ["d0", "d1", "d2"])
    for device in ("d0", "d1", "d2"):
        fleet.report(device, "activated")
    assert fleet.rollout(first["id"])["state"] == "succeeded"
    url = f"/api/v1/fleet/rollouts/{first['id']}/cutover"
    assert fleet.client.post(url, json={}, headers=fleet.headers).status_code == 422  # not blue-green

    staged = fleet.deploy(2, ["d0", "d1", "d2", "d3"], kind="blue_green", failure_threshold=0.5)
    rollout_id = staged["id"]
    assert staged["wave_plan"] == [4] and staged["progress"]["issued"] == 4
    manifest = json.loads(base64.b64decode(json.loads(fleet.latest("d0").envelope)["payload"]))
    assert manifest["stage_only"] is True and manifest["rollout_id"] == rollout_id
    url = f"/api/v1/fleet/rollouts/{rollout_id}/cutover"
    response = fleet.client.post(url, json={}, headers=fleet.headers)
    assert response.status_code == 409 and "staged" in response.text  # nobody staged yet

    fleet.report("d0", "staged")
    fleet.report("d1", "staged")
    fleet.report("d2", "failed", "self_test_failed")
    targets = fleet.targets(rollout_id)
    assert (targets["d0"], targets["d2"], targets["d3"]) == ("staged", "failed", "issued")
    read = fleet.client.get(f"/api/v1/fleet/rollouts/{rollout_id}/bluegreen", headers=fleet.headers).json()
    assert (read["targets"], read["staged"], read["not_staged"], read["last_cutover"]) == (4, 2, 2, None)

    response = fleet.client.post(url, json={"to": "new", "reason": "go"}, headers=fleet.headers)
    assert response.status_code == 202, response.text
    assert response.json()["last_cutover"]["sequence"] == 1 and response.json()["pending"] == 2
    back = fleet.client.post(url, json={"to": "old", "at": "2030-01-01T00:00:00Z"}, headers=fleet.headers)
    assert back.status_code == 422  # later than a signed command stays valid
    back = fleet.client.post(url, json={"to": "old"}, headers=fleet.headers)
    assert back.status_code == 202 and back.json()["last_cutover"]["sequence"] == 2

    with fleet.database.transaction() as session:
        commands = list(session.scalars(select(Cutover).where(Cutover.rollout_id == rollout_id)
                                        .order_by(Cutover.sequence)))
        assert [c.published_at for c in commands] == [None, None]
        assert [c.id for c in bluegreen.pending_cutovers(session)][-2:] == [c.id for c in commands]
        payloads = []
        for command in commands:
            envelope = json.loads(command.envelope)
            data = base64.b64decode(envelope["payload"])
            assert verify_signature(fleet.factory.signer.public_raw, base64.b64decode(envelope["signature"]), data)
            payloads.append(json.loads(data))
        bluegreen.mark_published(commands)
    new_sha, old_sha = payloads[0]["target_sha256"], payloads[1]["target_sha256"]
    assert payloads[0]["schema"] == "edgeloop.cutover/v1" and new_sha != old_sha
    assert new_sha == manifest["artifact"]["sha256"]

    _say(fleet, "d0", rollout_id, 2, "switched", version=1)
    _say(fleet, "d1", rollout_id, 2, "not_switched", "not_staged", version=1)
    read = fleet.client.get(f"/api/v1/fleet/rollouts/{rollout_id}/bluegreen", headers=fleet.headers).json()
    assert (read["switched"], read["not_switched"], read["pending"]) == (1, 1, 0)
    assert read["last_cutover"]["published_at"] is not None and read["serving"] == {"digits@1": 2}
    # Switch and shadow reports are kept as device state and never move the rollout's targets.
    _say(fleet, "d0", rollout_id, 1, "shadow_stopped", "shadow_too_slow")
    assert fleet.targets(rollout_id)["d0"] == "staged"
    assert fleet.client.get("/api/v1/fleet/devices/d0", headers=fleet.headers).json()["reported"]["reason"] == \
        "shadow_too_slow"

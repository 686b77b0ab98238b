"""In-band signing-key rotation against a real agent: rotate, follow, retire the old key, survive a restart."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from control_plane.keys.service import rotation_document
from control_plane.signing import Signer as ControlPlaneSigner
from edge_agent.daemon import EdgeAgent

pytestmark = pytest.mark.mqtt


def _envelope(payload: dict[str, Any], signer: ControlPlaneSigner, rotations: list[str] | None = None) -> bytes:
    data = json.dumps(payload).encode()
    body: dict[str, Any] = {"payload": base64.b64encode(data).decode(),
                            "signature": base64.b64encode(signer.sign(data)).decode(), "key_id": signer.key_id}
    if rotations:
        body["key_rotations"] = [json.loads(doc) for doc in rotations]
    return json.dumps(body).encode()


def _finals(harness: Any, device_id: str) -> list[dict[str, Any]]:
    # A signature failure carries no sequence (nothing unverified is parsed), so count every final event.
    return [e for e in harness.observer.statuses(device_id) if e["state"] in ("activated", "rejected", "failed")]


def _next_final(harness: Any, device_id: str, seen: int) -> dict[str, Any]:
    return dict(harness.observer.wait(lambda: (
        events := _finals(harness, device_id)) and len(events) > seen and events[-1]))


def test_rotation_is_followed_the_retired_key_refused_and_the_set_survives_restart(
    agent_factory: Callable[..., EdgeAgent], harness: Any
) -> None:
    old = ControlPlaneSigner(harness.signer.key)  # the key the device was provisioned with
    new = ControlPlaneSigner(Ed25519PrivateKey.generate())
    agent = agent_factory()
    device_id = agent.config.device_id
    harness.deploy(agent, 1, harness.models["v1_zipmap"])
    models = [harness.models[name] for name in ("v2_plain", "v1_plain", "v2_int8", "v1_zipmap", "v2_plain")]

    def send(sequence: int, signer: ControlPlaneSigner, rotations: list[str] | None = None) -> dict[str, Any]:
        seen = len(_finals(harness, device_id))
        harness.publish(device_id, _envelope(harness.manifest(device_id, sequence, models[sequence - 2]), signer,
                                             rotations))
        return _next_final(harness, device_id, seen)

    # A key the device has not been told about is refused, even though the signature itself is valid.
    assert send(2, new)["reason"] == "bad_signature"
    # The rotation document (signed by the current key) travels with the manifest; the old key gets a grace.
    grace_end = time.time() + 3.0
    rotation = rotation_document(old, version=2, now=time.time(),
                                 keys=[(old.public_b64, grace_end), (new.public_b64, None)])
    assert send(3, new, [rotation])["state"] == "activated"
    assert agent.updater.keys.current.version == 2
    assert send(4, old)["state"] == "activated"  # inside the grace period
    # A forged rotation (signed by a key the device does not trust) changes nothing.
    rogue = ControlPlaneSigner(Ed25519PrivateKey.generate())
    forged = rotation_document(rogue, version=3, now=time.time(), keys=[(rogue.public_b64, None)])
    assert send(5, rogue, [forged])["reason"] == "bad_signature"
    time.sleep(max(0.0, grace_end - time.time()) + 0.2)
    assert send(5, old)["reason"] == "retired_key"

    # The trusted set is durable: a restarted agent still refuses the old key and accepts the new one alone.
    seen = len(_finals(harness, device_id))
    agent.stop()
    restarted = agent_factory(device_id)
    assert restarted.updater.keys.current.version == 2
    # The broker hands the restarted agent the retained old-key manifest again: still refused.
    assert _next_final(harness, device_id, seen)["reason"] == "retired_key"
    # The control plane keeps sending the chain; its document, signed by the now retired key, is skipped harmlessly.
    assert send(6, new, [rotation])["state"] == "activated"
    harness.assert_serving(restarted, models[4])

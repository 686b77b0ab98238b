"""End-to-end OTA through real mosquitto, real HTTP downloads and real onnxruntime."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon import EdgeAgent

pytestmark = pytest.mark.mqtt


@pytest.fixture
def device(agent_factory: Callable[..., EdgeAgent], harness: Any) -> EdgeAgent:
    """A device already running model v1 (slot a)."""
    agent = agent_factory()
    harness.deploy(agent, 1, harness.models["v1_zipmap"])
    return agent


def test_first_deploy_reports_every_step_and_serves(agent_factory: Callable[..., EdgeAgent], harness: Any) -> None:
    agent = agent_factory()
    device_id = agent.config.device_id
    v1 = harness.models["v1_zipmap"]
    manifest = harness.deploy(agent, 1, v1)
    states = [e["state"] for e in harness.observer.statuses(device_id)]
    assert states == ["received", "downloading", "verified", "activated"]
    activated = harness.observer.statuses(device_id)[-1]
    assert activated["rollout_id"] == manifest["rollout_id"]
    assert activated["slot"] == "a" and activated["model"] == {"name": "digits-mlp", "version": 1}
    assert activated["schema"] == "edgeloop.status/v1" and activated["reason"] is None
    harness.assert_serving(agent, v1)
    presence = harness.observer.wait(
        lambda: (p := harness.observer.presence.get(device_id)) and p["model"] and p)
    assert presence["online"] is True and presence["slot"] == "a" and presence["model"]["version"] == 1
    downloads = [r for r in harness.server.requests if r["path"] in manifest["artifact"]["url"]]
    assert downloads and all(r["auth"] == f"Bearer {harness.server.token}" for r in downloads)


def test_update_to_int8_switches_slot_and_keeps_previous(device: EdgeAgent, harness: Any) -> None:
    v2 = harness.models["v2_int8"]
    harness.deploy(device, 2, v2)
    harness.assert_serving(device, v2)
    active = device.slots.active()
    assert active is not None and active["slot"] == "b" and active["previous"]["slot"] == "a"
    assert active["quantization"] == "int8"
    assert not device.slots.trial_path.exists()


def _expect_kept_v1(device: EdgeAgent, harness: Any, state: str, reason: str, sequence: int | None) -> None:
    event = harness.observer.wait_status(device.config.device_id, state, sequence)
    assert event["reason"] == reason
    harness.assert_serving(device, harness.models["v1_zipmap"])
    assert device.slots.active()["slot"] == "a"  # type: ignore[index]
    assert not device.slots.trial_path.exists()


def test_tampered_artifact_is_not_activated(device: EdgeAgent, harness: Any) -> None:
    v2 = harness.models["v2_plain"]
    tampered = bytearray(v2.data)
    tampered[len(tampered) // 2] ^= 0xFF
    harness.publish(device.config.device_id, harness.manifest(device.config.device_id, 2, v2, data=bytes(tampered)))
    _expect_kept_v1(device, harness, "failed", "sha256_mismatch", 2)
    assert not list(device.slots.slot_dir("b").glob("*.partial"))


def test_wrong_signature_is_rejected(device: EdgeAgent, harness: Any) -> None:
    manifest = harness.manifest(device.config.device_id, 2, harness.models["v2_plain"])
    harness.publish(device.config.device_id, harness.signer.envelope(manifest, key=Ed25519PrivateKey.generate()))
    _expect_kept_v1(device, harness, "rejected", "bad_signature", None)


def test_signature_over_other_bytes_is_rejected(device: EdgeAgent, harness: Any) -> None:
    manifest = harness.manifest(device.config.device_id, 2, harness.models["v2_plain"])
    envelope = json.loads(harness.signer.envelope(manifest))
    envelope["payload"] = base64.b64encode(json.dumps({**manifest, "sequence": 99}).encode()).decode()
    harness.publish(device.config.device_id, json.dumps(envelope).encode())
    _expect_kept_v1(device, harness, "rejected", "bad_signature", None)


@pytest.mark.parametrize("shape", ["bare", "empty_signature"])
def test_unsigned_manifest_is_rejected(device: EdgeAgent, harness: Any, shape: str) -> None:
    manifest = harness.manifest(device.config.device_id, 2, harness.models["v2_plain"])
    if shape == "bare":
        message = json.dumps(manifest).encode()
    else:
        message = json.dumps({"payload": base64.b64encode(json.dumps(manifest).encode()).decode(),
                              "signature": "", "key_id": harness.signer.key_id}).encode()
    harness.publish(device.config.device_id, message)
    _expect_kept_v1(device, harness, "rejected", "unsigned", None)


def test_replayed_older_manifest_is_rejected(device: EdgeAgent, harness: Any) -> None:
    device_id = device.config.device_id
    old = harness.manifest(device_id, 1, harness.models["v2_plain"])  # same sequence, other payload
    harness.publish(device_id, old)
    _expect_kept_v1(device, harness, "rejected", "replayed_sequence", 1)
    older = harness.manifest(device_id, 0, harness.models["v2_plain"])
    harness.publish(device_id, older)
    _expect_kept_v1(device, harness, "rejected", "replayed_sequence", 0)


def test_replay_of_a_previously_applied_manifest_after_update(device: EdgeAgent, harness: Any) -> None:
    device_id = device.config.device_id
    v1_envelope = harness.signer.envelope(harness.manifest(device_id, 2, harness.models["v1_plain"]))
    harness.publish(device_id, v1_envelope)
    harness.observer.wait_status(device_id, "activated", 2)
    harness.deploy(device, 3, harness.models["v2_plain"])
    harness.publish(device_id, v1_envelope)  # an attacker re-publishes the signed sequence-2 message
    event = harness.observer.wait_status(device_id, "rejected", 2)
    assert event["reason"] == "replayed_sequence"
    harness.assert_serving(device, harness.models["v2_plain"])


def test_expired_manifest_is_rejected(device: EdgeAgent, harness: Any) -> None:
    manifest = harness.manifest(device.config.device_id, 2, harness.models["v2_plain"],
                                issued_at=time.time() - 7200, expires_at=time.time() - 60)
    harness.publish(device.config.device_id, manifest)
    _expect_kept_v1(device, harness, "rejected", "expired", 2)


def test_manifest_for_another_device_is_rejected(device: EdgeAgent, harness: Any) -> None:
    manifest = harness.manifest("someone-else", 2, harness.models["v2_plain"])
    harness.publish(device.config.device_id, manifest)
    _expect_kept_v1(device, harness, "rejected", "wrong_device", 2)


def test_artifact_larger_than_declared_is_aborted(device: EdgeAgent, harness: Any) -> None:
    v2 = harness.models["v2_plain"]
    manifest = harness.manifest(device.config.device_id, 2, v2, data=v2.data + b"\0" * 50_000)
    harness.publish(device.config.device_id, manifest)
    _expect_kept_v1(device, harness, "failed", "size_exceeded", 2)


def test_endless_artifact_stream_is_cut_at_the_declared_size(device: EdgeAgent, harness: Any) -> None:
    v2 = harness.models["v2_plain"]
    manifest = harness.manifest(device.config.device_id, 2, v2)
    harness.fault(manifest, endless=True)
    harness.publish(device.config.device_id, manifest)
    _expect_kept_v1(device, harness, "failed", "size_exceeded", 2)


def test_declared_size_over_the_device_cap_is_rejected_before_download(
    agent_factory: Callable[..., EdgeAgent], harness: Any
) -> None:
    v1 = harness.models["v1_plain"]
    agent = agent_factory(max_artifact_bytes=len(v1.data) + 10)
    harness.deploy(agent, 1, v1)
    big = harness.manifest(agent.config.device_id, 2, harness.models["v2_plain"],
                           artifact={"size": len(v1.data) + 11})
    harness.publish(agent.config.device_id, big)
    event = harness.observer.wait_status(agent.config.device_id, "rejected", 2)
    assert event["reason"] == "size_exceeded"
    assert not [r for r in harness.server.requests if r["path"] in big["artifact"]["url"]]
    harness.assert_serving(agent, v1)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"expected_labels": "shift"}, "self_test_failed"),
        ({"expected_scores": "shift"}, "self_test_failed"),
        ({"max_latency_ms": 1e-6}, "latency_exceeded"),
    ],
)
def test_model_failing_self_test_is_not_activated(
    device: EdgeAgent, harness: Any, change: dict[str, Any], reason: str
) -> None:
    v2 = harness.models["v2_plain"]
    self_test: dict[str, Any] = {}
    if change.get("expected_labels") == "shift":
        self_test["expected_labels"] = [(label + 1) % 10 for label in v2.labels]
    elif change.get("expected_scores") == "shift":
        self_test["expected_scores"] = [[s + 0.01 for s in row] for row in v2.scores]
    else:
        self_test.update(change)
    manifest = harness.manifest(device.config.device_id, 2, v2, self_test=self_test)
    harness.publish(device.config.device_id, manifest)
    _expect_kept_v1(device, harness, "failed", reason, 2)


def test_artifact_that_is_not_a_model_fails_to_load(device: EdgeAgent, harness: Any) -> None:
    import hashlib

    junk = b"definitely not onnx" * 100
    v2 = harness.models["v2_plain"]
    manifest = harness.manifest(device.config.device_id, 2, v2, data=junk,
                                artifact={"sha256": hashlib.sha256(junk).hexdigest(), "size": len(junk)})
    harness.publish(device.config.device_id, manifest)
    _expect_kept_v1(device, harness, "failed", "load_failed", 2)


@pytest.mark.parametrize(
    "message",
    [b"{not json", b"\xff\xfe", b"[]", b'{"payload": 5, "signature": "x"}', b'{"payload": "!!", "signature": "!!"}'],
)
def test_malformed_message_is_reported_and_device_keeps_serving(
    device: EdgeAgent, harness: Any, message: bytes
) -> None:
    harness.publish(device.config.device_id, message)
    _expect_kept_v1(device, harness, "rejected", "malformed", None)
    harness.deploy(device, 2, harness.models["v2_plain"])  # and it still takes good updates
    harness.assert_serving(device, harness.models["v2_plain"])


def test_signed_but_malformed_payload_is_rejected(device: EdgeAgent, harness: Any) -> None:
    harness.publish(device.config.device_id, harness.signer.envelope(b"{\"schema\": \"edgeloop.manifest/v1\""))
    _expect_kept_v1(device, harness, "rejected", "malformed", None)
    manifest = harness.manifest(device.config.device_id, 2, harness.models["v2_plain"])
    del manifest["self_test"]
    harness.publish(device.config.device_id, manifest)
    event = harness.observer.wait(
        lambda: len([e for e in harness.observer.statuses(device.config.device_id) if e["state"] == "rejected"]) >= 2)
    assert event
    assert all(e["reason"] == "malformed" for e in harness.observer.statuses(device.config.device_id)
               if e["state"] == "rejected")
    harness.assert_serving(device, harness.models["v1_zipmap"])


def test_truncated_download_resumes_with_range(device: EdgeAgent, harness: Any) -> None:
    v2 = harness.models["v2_int8"]
    manifest = harness.manifest(device.config.device_id, 2, v2)
    path = manifest["artifact"]["url"].removeprefix(harness.server.base)
    harness.fault(manifest, truncate_at=len(v2.data) // 3, truncate_times=2)
    harness.publish(device.config.device_id, manifest)
    harness.observer.wait_status(device.config.device_id, "activated", 2)
    harness.assert_serving(device, v2)
    ranges = [r["range"] for r in harness.server.requests if r["path"] == path]
    assert ranges[0] is None
    assert f"bytes={len(v2.data) // 3}-" in ranges



def test_telemetry_hooks_publish_and_see_pubacks(agent_factory: Callable[..., EdgeAgent], harness: Any) -> None:
    import threading

    acked: list[int] = []
    got_ack = threading.Event()
    agent = agent_factory()

    def on_ack(mid: int) -> None:
        acked.append(mid)
        got_ack.set()

    agent.add_publish_listener(on_ack)
    mid = agent.publish_telemetry({"schema": "edgeloop.telemetry/v1", "device_id": agent.config.device_id, "n": 3})
    assert mid is not None
    assert got_ack.wait(10)
    harness.observer.wait(lambda: mid in acked)
    window = harness.observer.wait(
        lambda: next((t for t in harness.observer.telemetry if t["device_id"] == agent.config.device_id), None))
    assert window["n"] == 3

"""Hostile manifests and slow servers against a real agent: bounded time, bounded numbers, no token leaks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from edge_support import ArtifactServer

from edge_agent.daemon import EdgeAgent

pytestmark = pytest.mark.mqtt


@pytest.fixture
def device(agent_factory: Callable[..., EdgeAgent], harness: Any) -> EdgeAgent:
    """A device already running model v1 (slot a)."""
    agent = agent_factory()
    harness.deploy(agent, 1, harness.models["v1_zipmap"])
    return agent


@pytest.fixture
def evil_server() -> Iterator[ArtifactServer]:
    """Another origin on the same machine that records every request it gets."""
    server = ArtifactServer()
    yield server
    server.server.shutdown()


def _rejected(harness: Any, device_id: str, count: int) -> list[dict[str, Any]]:
    return list(harness.observer.wait(lambda: (
        events := [e for e in harness.observer.statuses(device_id) if e["state"] == "rejected"]
    ) and len(events) >= count and events))


def test_a_trickling_server_fails_the_download_in_bounded_time(
    agent_factory: Callable[..., EdgeAgent], harness: Any
) -> None:
    # deadline = grace + size / min_rate: about 1.5 s here, against a server sending 5 bytes a second.
    agent = agent_factory(download_min_rate_bps=100_000.0, download_grace_s=1.0)
    device_id = agent.config.device_id
    harness.deploy(agent, 1, harness.models["v1_zipmap"])
    manifest = harness.manifest(device_id, 2, harness.models["v2_int8"])
    fault = harness.fault(manifest, trickle_s=0.2)
    try:
        harness.publish(device_id, manifest)
        event = harness.observer.wait_status(device_id, "failed", 2)
    finally:
        fault.release.set()
    assert event["reason"] == "download_too_slow"
    assert agent.slots.ota_record()["outcome"] == "failed"
    harness.assert_serving(agent, harness.models["v1_zipmap"])
    harness.deploy(agent, 3, harness.models["v2_plain"])  # the next update is not held up


def test_a_newer_manifest_preempts_a_stalled_download(device: EdgeAgent, harness: Any) -> None:
    device_id = device.config.device_id
    stalled = harness.manifest(device_id, 2, harness.models["v2_int8"])
    fault = harness.fault(stalled, trickle_s=0.5)  # ~1 byte/s: would take hours, well inside the default deadline
    try:
        harness.publish(device_id, stalled)
        assert fault.reached.wait(20)
        harness.observer.wait_status(device_id, "downloading", 2)
        rollback = harness.manifest(device_id, 3, harness.models["v1_plain"])
        harness.publish(device_id, rollback)
        harness.observer.wait_status(device_id, "activated", 3)
        superseded = harness.observer.wait_status(device_id, "failed", 2)
        assert not fault.release.is_set()  # the slow server never sped up
    finally:
        fault.release.set()
    assert superseded["reason"] == "superseded"
    harness.assert_serving(device, harness.models["v1_plain"])


@pytest.mark.parametrize("sequence", [2**63, 2**64, 10**30])
def test_a_huge_sequence_is_refused_and_does_not_lock_the_device_out(
    device: EdgeAgent, harness: Any, sequence: int
) -> None:
    device_id = device.config.device_id
    harness.publish(device_id, harness.manifest(device_id, sequence, harness.models["v2_plain"]))
    assert _rejected(harness, device_id, 1)[-1]["reason"] == "malformed"
    assert device.slots.last_sequence() == 1
    harness.deploy(device, 2, harness.models["v2_plain"])


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    "body",
    # The broker caps packets at 512 KB; the agent's own 1 MiB cap is covered in test_edge_origin.py.
    [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 30_000 + b"1" + b"}" * 30_000, b"\xff\xfe\xfd"],
    ids=["deep-list", "deep-object", "bad-utf8"],
)
def test_decoder_failures_are_malformed_and_leave_durable_state_alone(
    device: EdgeAgent, harness: Any, body: bytes, signed: bool
) -> None:
    device_id = device.config.device_id
    before = device.slots.ota_path.read_bytes()
    harness.publish(device_id, harness.signer.envelope(body) if signed else body)
    assert _rejected(harness, device_id, 1)[-1]["reason"] == "malformed"
    assert device.slots.ota_path.read_bytes() == before
    harness.deploy(device, 2, harness.models["v2_plain"])


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"self_test": {"expected_scores": None}}, None),  # placeholder replaced below: NaN scores
        ({"expires_at": 1e12}, "validity_too_long"),
        ({"issued_at": time.time() + 86_400, "expires_at": time.time() + 2 * 86_400}, "issued_in_future"),
        ({"issued_at": float("inf")}, "malformed"),
        ({"self_test": {"tolerance": float("nan")}}, "malformed"),
        ({"self_test": {"max_latency_ms": float("inf")}}, "malformed"),
        ({"artifact": {"size": 2**70}}, "malformed"),
    ],
)
def test_non_finite_numbers_and_absurd_validity_are_refused(
    device: EdgeAgent, harness: Any, overrides: dict[str, Any], reason: str | None
) -> None:
    device_id = device.config.device_id
    manifest = harness.manifest(device_id, 2, harness.models["v2_plain"], **overrides)
    if reason is None:  # NaN expected scores made the self-test pass before.
        manifest["self_test"]["expected_scores"] = [[float("nan")] * 10 for _ in manifest["self_test"]["inputs"]]
        reason = "malformed"
    harness.publish(device_id, harness.signer.envelope(json.dumps(manifest).encode()))
    event = _rejected(harness, device_id, 1)[-1]
    assert (event["reason"], device.slots.last_sequence()) == (reason, 1)
    harness.assert_serving(device, harness.models["v1_zipmap"])


def test_the_token_goes_to_no_other_origin(device: EdgeAgent, harness: Any, evil_server: ArtifactServer) -> None:
    device_id = device.config.device_id
    good_port = harness.server.server.server_address[1]
    evil_port = evil_server.server.server_address[1]
    v2 = harness.models["v2_plain"]
    path = evil_server.add(v2.data).removeprefix(evil_server.base)
    urls = [
        f"http://127.0.0.1:{evil_port}{path}",
        f"http://127.0.0.1:{good_port}@127.0.0.1:{evil_port}{path}",
        f"http://127.0.0.1:{evil_port}\\@127.0.0.1:{good_port}{path}",
        f"http://localhost:{evil_port}{path}",
        f"//127.0.0.1:{evil_port}{path}",
        f"http://127.0.0.1.:{evil_port}{path}",
        f"http://[::ffff:127.0.0.1]:{evil_port}{path}",
    ]
    for sequence, url in enumerate(urls, start=2):
        harness.publish(device_id, harness.manifest(device_id, sequence, v2, artifact={"url": url}))
    events = _rejected(harness, device_id, len(urls))
    assert [e["reason"] for e in events] == ["untrusted_url"] * len(urls)
    assert evil_server.requests == []
    assert device.slots.last_sequence() == 1  # refused before it was accepted

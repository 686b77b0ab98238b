"""Envelope verification, payload schema and the device's acceptance policy."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.manifest import (
    ManifestRejected,
    check_policy,
    load_public_key,
    open_envelope,
    parse_payload,
    public_key_id,
)

SHA = "ab" * 32


def _payload(**overrides: Any) -> dict[str, Any]:
    now = time.time()
    body: dict[str, Any] = {
        "schema": "edgeloop.manifest/v1", "device_id": "dev-1", "sequence": 5, "rollout_id": "ro_1",
        "issued_at": now, "expires_at": now + 60, "model": {"name": "m", "version": 2},
        "artifact": {"sha256": SHA, "size": 100, "url": "http://cp/a", "format": "onnx", "quantization": "int8"},
        "input_schema": {"name": "input", "dtype": "float32", "shape": [None, 2]},
        "self_test": {"inputs": [[0.0, 1.0]], "expected_labels": [1], "tolerance": 0.001, "max_latency_ms": 5},
        "baseline": None, "telemetry": {"window_seconds": 60},
    }
    body.update(overrides)
    return body


def test_key_loading_formats_agree(tmp_path: Path, signer: Any) -> None:
    raw_file = tmp_path / "raw.pub"
    raw_file.write_bytes(signer.public_raw)
    pem_file = tmp_path / "key.pem"
    pem_file.write_bytes(signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    b64_file = tmp_path / "b64.pub"
    b64_file.write_text(signer.public_b64 + "\n")
    ids = {public_key_id(load_public_key(spec))
           for spec in (str(raw_file), str(pem_file), str(b64_file), signer.public_b64)}
    assert ids == {signer.key_id}
    with pytest.raises(ValueError):
        load_public_key("bm90IGEga2V5")  # base64 of 9 bytes


def test_valid_envelope_round_trip(signer: Any) -> None:
    key = load_public_key(signer.public_b64)
    payload = json.dumps(_payload()).encode()
    manifest = parse_payload(open_envelope(signer.envelope(payload), key))
    assert manifest.sequence == 5 and manifest.sha256 == SHA and manifest.self_test.expected_scores is None
    check_policy(manifest, device_id="dev-1", last_sequence=4, max_bytes=100)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "malformed"),
        (b"null", "malformed"),
        (b'{"payload": "e30="}', "unsigned"),
        (b'{"schema": "edgeloop.manifest/v1"}', "unsigned"),
        (b'{"payload": "e30=", "signature": "AAAA"}', "bad_signature"),
        (b'{"payload": "not base64!", "signature": "AAAA"}', "malformed"),
    ],
)
def test_bad_envelopes(signer: Any, message: bytes, reason: str) -> None:
    with pytest.raises(ManifestRejected) as caught:
        open_envelope(message, load_public_key(signer.public_b64))
    assert caught.value.reason == reason


def test_signature_is_checked_before_the_payload_is_parsed(signer: Any) -> None:
    envelope = json.loads(signer.envelope(b"this is not json"))
    envelope["payload"] = base64.b64encode(b"tampered, not json").decode()
    with pytest.raises(ManifestRejected) as caught:
        open_envelope(json.dumps(envelope).encode(), load_public_key(signer.public_b64))
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "overrides",
    [
        {"schema": "edgeloop.manifest/v0"}, {"sequence": True}, {"sequence": -1}, {"sequence": "5"},
        {"artifact": {"sha256": "XYZ", "size": 1, "url": "http://x"}},
        {"artifact": {"sha256": SHA, "size": 0, "url": "http://x"}},
        {"artifact": {"sha256": SHA, "size": 1, "url": "file:///etc/passwd"}},
        {"artifact": {"sha256": SHA, "size": 1, "url": "relative/no-slash"}},
        {"artifact": {"sha256": SHA, "size": 1, "url": "http://x", "format": "pickle"}},
        {"self_test": {"inputs": [], "expected_labels": []}},
        {"self_test": {"inputs": [[1.0]], "expected_labels": [1, 2]}},
        {"self_test": {"inputs": [["a"]], "expected_labels": [1]}},
        {"model": "m"}, {"expires_at": None},
    ],
)
def test_off_schema_payloads_are_malformed(overrides: dict[str, Any]) -> None:
    with pytest.raises(ManifestRejected) as caught:
        parse_payload(json.dumps(_payload(**overrides)).encode())
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"device_id": "dev-2"}, "wrong_device"),
        ({"last_sequence": 5}, "replayed_sequence"),
        ({"last_sequence": 9}, "replayed_sequence"),
        ({"now": time.time() + 3600}, "expired"),
        ({"max_bytes": 99}, "size_exceeded"),
    ],
)
def test_policy(kwargs: dict[str, Any], reason: str) -> None:
    manifest = parse_payload(json.dumps(_payload()).encode())
    args: dict[str, Any] = {"device_id": "dev-1", "last_sequence": None, "max_bytes": 1000, **kwargs}
    with pytest.raises(ManifestRejected) as caught:
        check_policy(manifest, **args)
    assert caught.value.reason == reason
    assert caught.value.manifest is manifest


def test_artifact_path_is_accepted_for_resolution_against_the_control_plane() -> None:
    manifest = parse_payload(json.dumps(_payload(artifact={"sha256": SHA, "size": 1, "url": "/api/v1/a"})).encode())
    assert manifest.url == "/api/v1/a"

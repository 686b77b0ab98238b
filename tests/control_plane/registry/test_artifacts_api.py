"""Artifacts: streamed, hash-verified, size-limited uploads; ranged downloads; ONNX schema inspection."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from control_plane.registry.onnx_tools import sklearn_to_onnx
from control_plane.settings import Settings
from tests.conftest import TokenFactory


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4)).astype(np.float32)
    return sklearn_to_onnx(LogisticRegression().fit(features, features[:, 0] > 0), 4)


def stored_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.artifacts_dir.rglob("*") if p.is_file())


def test_upload_download_and_resume(client: TestClient, operator_headers: dict[str, str], onnx_bytes: bytes,
                                    make_headers: TokenFactory) -> None:
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    first = client.post("/api/v1/artifacts", content=onnx_bytes, params={"sha256": digest}, headers=operator_headers)
    assert first.status_code == 201 and first.json() == {"sha256": digest, "size": len(onnx_bytes), "created": True}
    again = client.post("/api/v1/artifacts", content=onnx_bytes, headers=operator_headers)
    assert again.json()["created"] is False

    viewer = make_headers("viewer")
    full = client.get(f"/api/v1/artifacts/sha256/{digest}", headers=viewer)
    assert full.status_code == 200 and full.content == onnx_bytes and full.headers["accept-ranges"] == "bytes"
    tail = client.get(f"/api/v1/artifacts/sha256/{digest}", headers={**viewer, "Range": "bytes=100-"})
    assert tail.status_code == 206 and tail.content == onnx_bytes[100:]
    # Range errors carry the same JSON error body as every other error.
    for bad_range, status, code in [("bytes=9-2", 400, "bad_range"), ("items=0-1", 400, "bad_range"),
                                    (f"bytes={len(onnx_bytes) + 5}-", 416, "range_not_satisfiable")]:
        refused = client.get(f"/api/v1/artifacts/sha256/{digest}", headers={**viewer, "Range": bad_range})
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), bad_range
    past_end = client.get(f"/api/v1/artifacts/sha256/{digest}", headers={**viewer, "Range": "bytes=999999-"})
    assert past_end.headers["content-range"] == f"bytes */{len(onnx_bytes)}"
    assert client.get(f"/api/v1/artifacts/sha256/{'0' * 64}", headers=viewer).status_code == 404
    # Least privilege: a device may fetch only artifacts one of its manifests names (tests/control_plane/fleet).
    device = make_headers("device", device_id="dev-7")
    assert client.get(f"/api/v1/artifacts/sha256/{digest}", headers=device).status_code == 403


def test_hash_mismatch_and_oversize_leave_nothing_behind(client: TestClient, operator_headers: dict[str, str],
                                                         settings: Settings) -> None:
    mismatch = client.post("/api/v1/artifacts", content=b"abc", params={"sha256": "f" * 64},
                           headers=operator_headers)
    assert mismatch.status_code == 422 and mismatch.json()["error"]["details"]["declared"] == "f" * 64
    too_big = client.post("/api/v1/artifacts", content=b"x" * (settings.max_artifact_bytes + 1),
                          headers=operator_headers)
    assert too_big.status_code == 413

    def chunks() -> object:
        for _ in range(3):
            yield b"y" * (settings.max_artifact_bytes // 2)

    streamed = client.post("/api/v1/artifacts", content=chunks(), headers=operator_headers)
    assert streamed.status_code == 413  # no Content-Length: the limit is enforced while streaming
    assert stored_files(settings) == []


def test_attach_reads_the_onnx_schema_and_links_lineage(client: TestClient, operator_headers: dict[str, str],
                                                        onnx_bytes: bytes) -> None:
    digest = client.post("/api/v1/artifacts", content=onnx_bytes, headers=operator_headers).json()["sha256"]
    client.post("/api/v1/models", json={"name": "clf"}, headers=operator_headers)
    client.post("/api/v1/models/clf/versions", json={}, headers=operator_headers)
    attached = client.post("/api/v1/models/clf/versions/1/artifacts", json={"sha256": digest},
                           headers=operator_headers)
    assert attached.status_code == 201, attached.text
    body = attached.json()
    assert body["input_schema"]["tensors"] == [{"name": "input", "dtype": "float32", "shape": [None, 4]}]
    assert body["download_path"] == f"/api/v1/artifacts/sha256/{digest}"
    duplicate = client.post("/api/v1/models/clf/versions/1/artifacts", json={"sha256": digest},
                            headers=operator_headers)
    assert duplicate.status_code == 409

    junk = client.post("/api/v1/artifacts", content=b"not onnx at all", headers=operator_headers).json()
    client.post("/api/v1/models/clf/versions", json={}, headers=operator_headers)
    rejected = client.post("/api/v1/models/clf/versions/2/artifacts", json={"sha256": junk["sha256"]},
                           headers=operator_headers)
    assert rejected.status_code == 422 and "ONNX" in rejected.json()["error"]["message"]
    unknown = client.post("/api/v1/models/clf/versions/1/artifacts", json={"sha256": "a" * 64},
                          headers=operator_headers)
    assert unknown.status_code == 404

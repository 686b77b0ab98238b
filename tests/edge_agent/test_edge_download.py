"""Artifact download against a real HTTP server: auth, resume, size bounds, digest checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from edge_agent.download import DownloadError, download_artifact

BLOB = os.urandom(300_000)
SHA = hashlib.sha256(BLOB).hexdigest()


def _get(server: Any, dest: Path | None, url: str, **kw: Any) -> int:
    args: dict[str, Any] = {"url": url, "token": server.token, "dest": dest, "sha256": SHA,
                            "declared_size": len(BLOB), "max_bytes": 10 * len(BLOB), "attempts": 3,
                            "backoff_s": 0.01, **kw}
    return download_artifact(**args)


def test_download_sends_the_bearer_token(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB)
    assert _get(artifact_server, tmp_path / "x.partial", url) == len(BLOB)
    assert (tmp_path / "x.partial").read_bytes() == BLOB
    request = [r for r in artifact_server.requests if url.endswith(r["path"])][-1]
    assert request["auth"] == f"Bearer {artifact_server.token}" and request["range"] is None


def test_wrong_token_fails_without_retrying(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB)
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, tmp_path / "x.partial", url, token="stolen")
    assert caught.value.reason == "download_failed" and "401" in caught.value.detail
    assert len([r for r in artifact_server.requests if url.endswith(r["path"])]) == 1


def test_resumes_after_repeated_truncation(artifact_server: Any, tmp_path: Path, harness: Any) -> None:
    url = artifact_server.add(BLOB)
    harness.fault({"artifact": {"url": url}}, truncate_at=100_000, truncate_times=1)
    assert _get(artifact_server, tmp_path / "x.partial", url) == len(BLOB)
    ranges = [r["range"] for r in artifact_server.requests if url.endswith(r["path"])]
    assert ranges == [None, "bytes=100000-"]


def test_gives_up_after_bounded_attempts_and_keeps_the_partial(
    artifact_server: Any, tmp_path: Path, harness: Any
) -> None:
    url = artifact_server.add(BLOB)
    harness.fault({"artifact": {"url": url}}, truncate_at=50_000, truncate_times=100)
    dest = tmp_path / "x.partial"
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, dest, url)
    assert caught.value.reason == "download_failed"
    assert dest.stat().st_size == 50_000  # kept for the next attempt to resume
    assert len([r for r in artifact_server.requests if url.endswith(r["path"])]) == 4


def test_resumes_a_partial_left_by_an_earlier_run(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB)
    dest = tmp_path / "x.partial"
    dest.write_bytes(BLOB[:123_456])
    assert _get(artifact_server, dest, url) == len(BLOB)
    assert [r["range"] for r in artifact_server.requests if url.endswith(r["path"])] == ["bytes=123456-"]


def test_damaged_partial_is_discarded_and_fetched_again(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB)
    dest = tmp_path / "x.partial"
    dest.write_bytes(b"\0" * 1000)
    assert _get(artifact_server, dest, url) == len(BLOB)
    assert dest.read_bytes() == BLOB
    assert [r["range"] for r in artifact_server.requests if url.endswith(r["path"])] == ["bytes=1000-", None]


def test_complete_partial_answered_416_is_accepted(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB)
    dest = tmp_path / "x.partial"
    dest.write_bytes(BLOB)
    assert _get(artifact_server, dest, url) == len(BLOB)


@pytest.mark.parametrize(
    ("served", "kwargs"),
    [
        (BLOB + b"x", {}),  # Content-Length announces more than declared
        (BLOB, {"declared_size": len(BLOB) - 1}),
        (BLOB, {"max_bytes": 1000}),  # the device's own hard cap wins over the manifest
    ],
)
def test_size_bounds(artifact_server: Any, tmp_path: Path, served: bytes, kwargs: dict[str, Any]) -> None:
    url = artifact_server.add(served)
    dest = tmp_path / "x.partial"
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, dest, url, **kwargs)
    assert caught.value.reason == "size_exceeded"
    assert not dest.exists()


def test_endless_body_is_cut(artifact_server: Any, tmp_path: Path, harness: Any) -> None:
    url = artifact_server.add(BLOB)
    harness.fault({"artifact": {"url": url}}, endless=True)
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, tmp_path / "x.partial", url)
    assert caught.value.reason == "size_exceeded"


def test_digest_mismatch(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB[:-1] + b"!")
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, tmp_path / "x.partial", url)
    assert caught.value.reason == "sha256_mismatch"
    assert not (tmp_path / "x.partial").exists()


def test_hash_only_mode_writes_nothing(artifact_server: Any, tmp_path: Path) -> None:
    url = artifact_server.add(BLOB)
    assert _get(artifact_server, None, url) == len(BLOB)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_fails_after_bounded_retries(tmp_path: Path, artifact_server: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, tmp_path / "x.partial", f"http://127.0.0.1:{port}/a", attempts=2)
    assert caught.value.reason == "download_failed"


def test_redirects_keep_the_token_only_on_the_same_host(artifact_server: Any, tmp_path: Path) -> None:
    target = artifact_server.add(BLOB)
    artifact_server.redirects["/same-host"] = target
    assert _get(artifact_server, tmp_path / "a.partial", artifact_server.base + "/same-host") == len(BLOB)
    other_host = target.replace("127.0.0.1", "localhost")
    artifact_server.redirects["/other-host"] = other_host
    with pytest.raises(DownloadError) as caught:
        _get(artifact_server, tmp_path / "b.partial", artifact_server.base + "/other-host")
    assert "401" in caught.value.detail  # the token was not sent to the other host
    assert artifact_server.requests[-1]["auth"] is None

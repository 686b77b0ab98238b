"""Input refused before the app reads it: body limits, authentication before the body, NUL, NaN and Infinity."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from control_plane.main import create_app
from control_plane.settings import Settings

HUGE = 60 * 1024 * 1024  # bigger than any limit; never actually sent in full


def call_asgi(app: FastAPI, method: str, path: str, headers: dict[str, str], chunks: list[bytes],
              ) -> tuple[int, dict[str, Any], int]:
    """Drive the app over raw ASGI; return status, JSON body and how many body messages the app pulled."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled <= len(chunks):
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1234),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/artifacts", "/api/v1/drift/exact"])
def test_unauthenticated_body_is_refused_before_one_byte_is_read(app: FastAPI, path: str) -> None:
    # Content-Length within the artifact limit, so only authentication can refuse it.
    status, body, pulled = call_asgi(app, "POST", path, {"content-length": "1000", "content-type": "application/json"},
                                     [b"x" * 1000])
    assert (status, body["error"]["code"], pulled) == (401, "unauthenticated", 0)


def test_a_bad_token_is_refused_before_the_body_too(app: FastAPI) -> None:
    headers = {"content-length": "10", "authorization": "Bearer elp_0123456789abcdef_nope"}
    status, body, pulled = call_asgi(app, "POST", "/api/v1/models", headers, [b"{}" * 5])
    assert (status, body["error"]["message"], pulled) == (401, "invalid token", 0)


def test_chunked_body_past_the_limit_stops_reading_at_the_limit(app: FastAPI, admin_headers: dict[str, str]) -> None:
    chunks = [b" " * 65536] * 64  # 4 MiB announced by no header, 1 MiB allowed
    headers = {"transfer-encoding": "chunked", "content-type": "application/json", **admin_headers}
    status, body, pulled = call_asgi(app, "POST", "/api/v1/models", headers, chunks)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert pulled == 17  # 16 chunks fill the 1 MiB limit exactly; the 17th passes it and nothing more is read


def test_declared_length_past_the_limit_is_refused_unread(app: FastAPI, admin_headers: dict[str, str]) -> None:
    headers = {"content-length": str(HUGE), **admin_headers}
    status, body, pulled = call_asgi(app, "POST", "/api/v1/models", headers, [b"x"])
    assert (status, body["error"]["code"], body["error"]["details"]["limit"], pulled) == (
        413, "payload_too_large", 1024 * 1024, 0)


def test_routes_keep_their_own_limits(app: FastAPI, admin_headers: dict[str, str]) -> None:
    # The artifact upload's limit is max_artifact_bytes (2 MiB in tests), not the 1 MiB default.
    blob = b"\x01" * (1536 * 1024)
    status, body, _ = call_asgi(app, "POST", "/api/v1/artifacts",
                                {"content-length": str(len(blob)), "content-type": "application/octet-stream",
                                 **admin_headers}, [blob])
    assert status == 201 and body["size"] == len(blob)
    status, body, pulled = call_asgi(app, "POST", "/api/v1/artifacts",
                                     {"content-length": str(3 * 1024 * 1024), **admin_headers}, [b"x"])
    assert (status, pulled) == (413, 0)


def test_authenticated_bodies_still_work_with_one_token_lookup(client: TestClient,
                                                               admin_headers: dict[str, str]) -> None:
    created = client.post("/api/v1/models", json={"name": "m1", "description": "d"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    viewer = client.post("/api/v1/tokens", json={"name": "v", "role": "viewer"}, headers=admin_headers).json()
    refused = client.post("/api/v1/models", json={"name": "m2"}, headers={"Authorization": f"Bearer {viewer['token']}"})
    assert refused.status_code == 403  # authenticated before the body, authorised by the route's scope


@pytest.mark.parametrize("url", ["/api/v1/models/a%00b", "/api/v1/models?offset=1%00", "/api/v1/audit?actor=%00"])
def test_nul_in_path_or_query_is_422(client: TestClient, admin_headers: dict[str, str], url: str) -> None:
    response = client.get(url, headers=admin_headers)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("raw", [b'{"name": "m", "tags": {"a": NaN}}', b'{"name": "m", "tags": {"a": -Infinity}}',
                                 b'{"name": "m", "tags": {"a": 1e999}}', b'{"name": "m", "tags": {"a": [-2.5E+400]}}',
                                 b'{"name": "m", "description": "a\\u0000b"}', b'{"name": "m\\u0000"}'])
def test_json_that_cannot_be_stored_is_422(client: TestClient, admin_headers: dict[str, str], raw: bytes) -> None:
    response = client.post("/api/v1/models", content=raw,
                           headers={"content-type": "application/json", **admin_headers})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid", response.text
    assert client.get("/api/v1/models", headers=admin_headers).json() == []


def test_words_that_look_like_tokens_are_fine(client: TestClient, admin_headers: dict[str, str]) -> None:
    raw = b'{"name": "m", "description": "NaN and Infinity and \\\\u0000 are just words here"}'
    response = client.post("/api/v1/models", content=raw, headers={"content-type": "application/json",
                                                                   **admin_headers})
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "NaN and Infinity and \\u0000 are just words here"


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """Serve the control plane with uvicorn on a free port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def read_status(connection: socket.socket) -> int:
    """Read one response's status line (the socket timeout is a safety net, not an assertion)."""
    received = b""
    while b"\r\n" not in received:
        chunk = connection.recv(4096)
        assert chunk, "the server closed the connection without answering"
        received += chunk
    return int(received.split(b" ", 2)[1])


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/artifacts"])
def test_a_large_unauthenticated_upload_is_answered_without_sending_it(live_server: str, path: str) -> None:
    host, port = live_server.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as upload:
        upload.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {HUGE}\r\n\r\n".encode() + b"[" * 65536)
        # The answer arrives while 99.9% of the declared body is still unsent: the server did not wait for it.
        assert read_status(upload) in (401, 413)
        # The upload's connection is still open; the server answers others meanwhile.
        assert httpx.get(f"http://{live_server}/healthz", timeout=60).json() == {"status": "ok"}


def test_telemetry_windows_keep_their_per_window_quarantine(client: TestClient, make_headers: Any) -> None:
    # One bad window must not cost the others, so the guard leaves this route's JSON to the ingest's own checks.
    device = make_headers("device", device_id="dev-1")
    raw = b'[{"calls": NaN}, {"device_id": "dev-1"}]'
    response = client.post("/api/v1/telemetry/windows", content=raw,
                           headers={"content-type": "application/json", **device})
    assert response.status_code == 200, response.text
    assert response.json()["received"] == 2 and sum(response.json()["quarantined"].values()) == 2

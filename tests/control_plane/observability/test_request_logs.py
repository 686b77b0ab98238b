"""Request ids (taken, validated or generated) in the response and on every log record; JSON lines; no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from control_plane.auth.roles import Role
from control_plane.observability.log_format import JsonFormatter, RedactingFormatter, redact
from control_plane.observability.request_context import RequestIdFilter
from tests.conftest import TokenFactory


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Capture every record of every logger at DEBUG, as JSON and as text, the way `edgeloop serve` writes them."""
    stream = io.StringIO()
    handlers = []
    for formatter in (JsonFormatter(), RedactingFormatter("%(levelname)s %(name)s [%(request_id)s]: %(message)s")):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        handlers.append(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield stream
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)


def json_records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_a_valid_request_id_is_echoed_and_stamped_on_the_access_line(client: TestClient,
                                                                     log_lines: io.StringIO) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:42"})
    assert response.headers["x-request-id"] == "lb-7f3a:42"
    access = [r for r in json_records(log_lines) if r["logger"] == "control_plane.access"]
    assert access[-1]["request_id"] == "lb-7f3a:42"
    assert access[-1]["route"] == "/healthz" and access[-1]["status"] == 200


@pytest.mark.parametrize("bad", ["", "x" * 129, "a b", "id;Set-Cookie=x", "ünïcode", "<script>"])
def test_an_invalid_request_id_is_replaced_by_a_generated_one(client: TestClient, bad: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": bad.encode("utf-8")})
    generated = response.headers["x-request-id"]
    assert generated != bad and len(generated) == 32 and generated.isalnum()


def test_each_request_gets_its_own_id(client: TestClient) -> None:
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_records_inside_a_request_carry_its_id(app: FastAPI, log_lines: io.StringIO) -> None:
    @app.get("/test-log")
    def logs_something() -> dict[str, str]:
        logging.getLogger("control_plane.test").warning("inside the handler")
        return {}

    with TestClient(app) as client:
        response = client.get("/test-log", headers={"X-Request-ID": "req-1"})
    inside = [r for r in json_records(log_lines) if r["message"] == "inside the handler"]
    assert inside and inside[0]["request_id"] == "req-1" == response.headers["x-request-id"]


def test_no_token_reaches_any_log_line(client: TestClient, make_headers: TokenFactory, log_lines: io.StringIO) -> None:
    viewer = make_headers(Role.VIEWER)
    secret = viewer["Authorization"].removeprefix("Bearer ")
    forged = secret[:-4] + "AAAA"  # a well-formed token that does not verify
    client.get("/api/v1/models", headers=viewer)
    client.get("/api/v1/models", headers={"Authorization": f"Bearer {forged}"})
    client.get(f"/api/v1/models?token={secret}", headers={"Authorization": f"Bearer {secret}"})
    client.get(f"/api/v1/{secret}")
    client.post("/api/v1/models", headers=viewer, content=b"{not json")
    logging.getLogger("control_plane.test").warning("caller sent Authorization: Bearer %s", secret)
    text = log_lines.getvalue()
    assert "control_plane.access" in text  # the requests were logged, as JSON and as text
    assert secret not in text and forged not in text
    # Not even the secret part alone. Split at most twice: the url-safe secret may itself hold or begin with "_".
    assert secret.split("_", 2)[2] not in text


def test_redaction_covers_urls_queries_and_exceptions() -> None:
    assert redact("mqtt://edgeloop:s3cr3t@broker:1883") == "mqtt://edgeloop:[redacted]@broker:1883"
    assert redact("GET /x?a=1&token=abc&password=p") == "GET /x?a=1&token=[redacted]&password=[redacted]"
    assert redact("authorization: bearer abc.def") == "authorization: bearer [redacted]"
    # token_urlsafe secrets may begin with "_" or "-" (1 draw in 32): the whole secret still goes
    assert redact("key elp_715ed2720a91be49__EZy-w_Rc, next") == "key elp_[redacted], next"
    assert redact("key elp_715ed2720a91be49_-EZy") == "key elp_[redacted]"
    try:
        raise ValueError("bad token elp_k1_s3cr3tvalue")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
        import sys
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "s3cr3tvalue" not in line and json.loads(line)["exception"].endswith("elp_[redacted]")

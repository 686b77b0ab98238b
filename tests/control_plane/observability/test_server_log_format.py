"""`edgeloop serve`'s handlers: the chosen format, the request-id filter, and INFO on the console in JSON mode."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.logs import configure_cli_logging
from control_plane.observability.log_format import use_server_log_format
from control_plane.observability.request_context import request_id_var


def capture_console(stream: io.StringIO) -> None:
    """Point the CLI's console handler (stderr) at ``stream``."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and getattr(handler, "_edgeloop", False):
            handler.setStream(stream)


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """A stream for the CLI's console handler; the root logger is restored afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield stream
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])


def test_json_mode_writes_one_object_per_record_with_the_request_id(console: io.StringIO, tmp_path: Path) -> None:
    log_file = tmp_path / "edgeloop.log"
    configure_cli_logging(log_file, debug=False)
    capture_console(console)
    use_server_log_format("json")
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("control_plane.access").info("GET /healthz 200")
        logging.getLogger("uvicorn.error").info("Application startup complete.")
        logging.getLogger("some.library").info("chatter the operator cannot act on")
        logging.getLogger("control_plane.x").warning("password in mqtt://cp:hunter2@broker:1883")
    finally:
        request_id_var.reset(token)
    records = [json.loads(line) for line in console.getvalue().splitlines()]
    assert [r["logger"] for r in records] == ["control_plane.access", "uvicorn.error", "control_plane.x"]
    assert {r["request_id"] for r in records} == {"req-42"}
    assert "hunter2" not in console.getvalue() and "hunter2" not in log_file.read_text()
    assert all(json.loads(line) for line in log_file.read_text().splitlines())  # the file is JSON lines too


def test_text_mode_keeps_the_console_quiet_and_adds_the_request_id(console: io.StringIO, tmp_path: Path) -> None:
    log_file = tmp_path / "edgeloop.log"
    configure_cli_logging(log_file, debug=False)
    capture_console(console)
    use_server_log_format("text")
    logging.getLogger("control_plane.access").info("GET /healthz 200")
    logging.getLogger("control_plane.x").warning("careful: Bearer elp_abc_secretpart")
    assert "GET /healthz" not in console.getvalue()  # INFO stays in the file in text mode
    assert "[None]: careful: Bearer [redacted]" in console.getvalue()
    assert "secretpart" not in log_file.read_text() and "GET /healthz 200" in log_file.read_text()

"""The checkpointer signs only what it verified, and copies each checkpoint to the file and external sinks."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from control_plane.audit.checkpoints import AuditChainBroken, Checkpointer, CheckpointSink, load_checkpoint_file
from control_plane.db.session import Database
from control_plane.errors import Invalid
from control_plane.main import create_app
from control_plane.settings import Settings
from control_plane.signing import Signer
from tests.control_plane.audit.tampering import append, execute, rewrite_recomputing, verify


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "keys" / "audit.pem")


@pytest.fixture
def sink(tmp_path: Path) -> CheckpointSink:
    return CheckpointSink(file=tmp_path / "audit-checkpoints.jsonl")


def checkpoint_seqs(database: Database) -> list[int]:
    with database.transaction(write=False) as session:
        return list(session.scalars(text("SELECT seq FROM audit_checkpoints ORDER BY seq")))


def test_forged_suffix_is_not_signed(database: Database, signer: Signer, sink: CheckpointSink) -> None:
    checkpointer = Checkpointer(database, signer, sink)
    append(database, 3)
    assert checkpointer.step() is not None
    append(database, 2)
    execute(database, "UPDATE audit_entries SET body = replace(body, 'operator:t', 'operator:x') WHERE seq = 5")
    with pytest.raises(AuditChainBroken, match="audit entry 5"):
        checkpointer.step()
    assert checkpoint_seqs(database) == [3]
    assert [r.seq for r in load_checkpoint_file(sink.file or Path())] == [3]


def test_rewrite_of_verified_entries_is_not_signed_after_checkpoints_are_deleted(
        database: Database, signer: Signer, sink: CheckpointSink) -> None:
    checkpointer = Checkpointer(database, signer, CheckpointSink())  # no file: only its memory to go on
    append(database, 6)
    assert checkpointer.step() is not None
    # Rewrite with recomputed hashes and remove the checkpoint that would show it: the chain is self-consistent.
    rewrite_recomputing(database, 4)
    execute(database, "DELETE FROM audit_checkpoints")
    append(database, 1)
    with pytest.raises(AuditChainBroken, match="rewritten"):
        checkpointer.step()
    assert checkpoint_seqs(database) == []


def test_a_fresh_checkpointer_anchors_on_the_file(database: Database, signer: Signer, sink: CheckpointSink) -> None:
    append(database, 6)
    assert Checkpointer(database, signer, sink).step() is not None
    rewrite_recomputing(database, 4)
    execute(database, "DELETE FROM audit_checkpoints")
    # A restarted process (no memory) still finds the signed head in the append-only file.
    with pytest.raises(AuditChainBroken, match="rewritten"):
        Checkpointer(database, signer, sink).step()
    assert checkpoint_seqs(database) == []


def test_truncation_below_the_anchor_is_not_signed(database: Database, signer: Signer, sink: CheckpointSink) -> None:
    append(database, 5)
    Checkpointer(database, signer, sink).step()
    execute(database, "DELETE FROM audit_entries WHERE seq > 2")
    execute(database, "DELETE FROM audit_checkpoints")
    with pytest.raises(AuditChainBroken, match="truncated"):
        Checkpointer(database, signer, sink).step()


def test_incremental_steps_sign_each_new_head(database: Database, signer: Signer, sink: CheckpointSink) -> None:
    checkpointer = Checkpointer(database, signer, sink)
    assert checkpointer.step() is None  # empty log
    append(database, 2)
    assert checkpointer.step() is not None and checkpointer.verified[0] == 2  # type: ignore[index]
    assert checkpointer.step() is None  # nothing new
    append(database, 3)
    assert checkpointer.step() is not None
    assert checkpoint_seqs(database) == [2, 5]
    lines = (sink.file or Path()).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [2, 5]
    assert verify(database, signer, against=sink.file).ok


def test_graceful_shutdown_does_not_sign_a_forged_suffix(settings: Settings, admin_headers: dict[str, str]) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        client.post("/api/v1/models", json={"name": "before"}, headers=admin_headers)
        assert client.post("/api/v1/audit/checkpoints", headers=admin_headers).status_code == 201
        client.post("/api/v1/models", json={"name": "after"}, headers=admin_headers)
        database: Database = app.state.database
        execute(database, "UPDATE audit_entries SET actor = 'admin:nobody' WHERE seq = 3")
        refused = client.post("/api/v1/audit/checkpoints", headers=admin_headers)
        assert refused.status_code == 409 and "not signing" in refused.json()["error"]["message"]
    # Leaving the client ran the shutdown's final checkpoint step: it must not have signed the forged head.
    check = Database(settings.resolved_database_url)
    try:
        assert checkpoint_seqs(check) == [2]
    finally:
        check.dispose()
    assert [r.seq for r in load_checkpoint_file(settings.data_dir / "audit-checkpoints.jsonl")] == [2]


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            type(self).received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_sink() -> Iterator[str]:
    _Collector.received, _Collector.fail_first = [], 1
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints"
    server.shutdown()
    server.server_close()


def test_http_sink_receives_every_checkpoint_after_an_outage(database: Database, signer: Signer, tmp_path: Path,
                                                            http_sink: str) -> None:
    sink = CheckpointSink(file=tmp_path / "cp.jsonl", url=http_sink)
    checkpointer = Checkpointer(database, signer, sink)
    append(database, 1)
    checkpointer.step()  # the endpoint answers 503: kept for later, signing goes on
    assert _Collector.received == []
    append(database, 1)
    checkpointer.step()
    assert [json.loads(body)["seq"] for body in _Collector.received] == [1, 2]


def test_command_sink_gets_the_line_on_stdin(database: Database, signer: Signer, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    copy = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read())"
    command = f"{sys.executable} -c '{copy}' {bucket}/checkpoint-{{seq}}.json"
    sink = CheckpointSink(file=None, command=command)
    append(database, 3)
    Checkpointer(database, signer, sink).step()
    stored = json.loads((bucket / "checkpoint-3.json").read_text())
    assert stored["seq"] == 3 and len(stored["head_hash"]) == 64


def test_checkpoint_file_is_private(database: Database, signer: Signer, sink: CheckpointSink) -> None:
    append(database, 1)
    Checkpointer(database, signer, sink).step()
    assert sink.file is not None and sink.file.stat().st_mode & 0o777 == 0o600


def test_a_line_torn_by_a_crash_does_not_stop_checkpointing(database: Database, signer: Signer,
                                                            sink: CheckpointSink) -> None:
    append(database, 2)
    Checkpointer(database, signer, sink).step()
    assert sink.file is not None
    with sink.file.open("a") as handle:
        handle.write('{"seq":3,"head_ha')  # power lost mid-append: no newline
    assert [r.seq for r in load_checkpoint_file(sink.file)] == [2]  # a torn last line is skipped
    append(database, 1)
    assert Checkpointer(database, signer, sink).step() is not None
    assert [r.seq for r in load_checkpoint_file(sink.file, strict=False)] == [2, 3]
    # Once more lines follow it, a verifier cannot tell a torn line from an edited one: it is named, not skipped.
    with pytest.raises(Invalid, match=r"audit-checkpoints.jsonl:2: not a checkpoint line"):
        load_checkpoint_file(sink.file)

"""The tampering matrix: every edit an attacker with database access can make is caught and located.

Each case runs on SQLite and PostgreSQL. Ten entries, signed checkpoints at 4 and 8 (in the database and in the
append-only file); the attack; then verify, from the database alone and with ``--against`` the file.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane.audit import service as audit_service
from control_plane.audit.chain import checkpoint_message
from control_plane.audit.checkpoints import CheckpointSink
from control_plane.db.session import Database
from control_plane.private_files import append_private_line
from control_plane.signing import Signer
from tests.control_plane.audit.tampering import (
    append,
    checkpoint,
    entry_hash_at,
    execute,
    rewrite_recomputing,
    truncate_and_move_head,
    verify,
)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "keys" / "audit.pem")


@pytest.fixture
def sink(tmp_path: Path) -> CheckpointSink:
    return CheckpointSink(file=tmp_path / "offsite" / "audit-checkpoints.jsonl")


@pytest.fixture
def log(database: Database, signer: Signer, sink: CheckpointSink) -> Path:
    """Build the ten-entry log with checkpoints at 4 and 8; return the checkpoint file."""
    append(database, 4)
    assert checkpoint(database, signer, sink) == 4
    append(database, 4)
    assert checkpoint(database, signer, sink) == 8
    append(database, 2)
    assert verify(database, signer).ok
    assert sink.file is not None
    clean = verify(database, signer, against=sink.file)
    assert clean.ok and clean.external_checkpoints_verified == 2
    return sink.file


def test_edit_body(database: Database, signer: Signer, log: Path) -> None:
    execute(database, "UPDATE audit_entries SET body = replace(body, :old, :new) WHERE seq = 6",
            old='"data":{', new='"data":{"approved_by":"nobody",')
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 6 and "content" in (report.reason or "")


@pytest.mark.parametrize(("column", "value"), [
    ("actor", "admin:someone-else"), ("action", "test.harmless"), ("resource_type", "other"),
    ("resource_id", "999"), ("ts", "2001-01-01 00:00:00.000000"),
])
def test_edit_column(database: Database, signer: Signer, log: Path, column: str, value: str) -> None:
    # The columns queries filter on: editing one hid the entry from filtered queries while verify said ok.
    execute(database, f"UPDATE audit_entries SET {column} = :v WHERE seq = 9", v=value)
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 9
    assert column in (report.reason or "") and "hashed body" in (report.reason or "")


def test_edit_column_to_another_type_or_empty(database: Database, signer: Signer, log: Path) -> None:
    # SQLite lets a text column hold an integer; PostgreSQL does not, so there the column is emptied.
    execute(database, "UPDATE audit_entries SET actor = 7 WHERE seq = 3" if database.is_sqlite
            else "UPDATE audit_entries SET actor = '' WHERE seq = 3")
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 3 and "actor" in (report.reason or "")


def test_delete_row(database: Database, signer: Signer, log: Path) -> None:
    execute(database, "DELETE FROM audit_entries WHERE seq = 6")
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 7 and "expected 6" in (report.reason or "")


def test_truncate(database: Database, signer: Signer, log: Path) -> None:
    execute(database, "DELETE FROM audit_entries WHERE seq > 9")
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 10 and "head says 10" in (report.reason or "")


def test_truncate_and_move_head_behind_a_checkpoint(database: Database, signer: Signer, log: Path) -> None:
    truncate_and_move_head(database, keep=6)
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 7 and "truncated" in (report.reason or "")


def test_truncate_move_head_and_delete_checkpoints(database: Database, signer: Signer, log: Path) -> None:
    truncate_and_move_head(database, keep=6)
    execute(database, "DELETE FROM audit_checkpoints WHERE seq > 6")
    assert verify(database, signer).ok  # the database alone cannot know
    report = verify(database, signer, against=log)
    assert not report.ok and report.first_broken_seq == 7 and "truncated" in (report.reason or "")


def test_swap_rows(database: Database, signer: Signer, log: Path) -> None:
    execute(database, "UPDATE audit_entries SET seq = -1 WHERE seq = 3")
    execute(database, "UPDATE audit_entries SET seq = 3 WHERE seq = 2")
    execute(database, "UPDATE audit_entries SET seq = 2 WHERE seq = -1")
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 2


def test_rewrite_with_recomputed_hashes_before_the_last_checkpoint(database: Database, signer: Signer,
                                                                   log: Path) -> None:
    rewrite_recomputing(database, 6)
    report = verify(database, signer)
    # The chain is self-consistent; checkpoint 8 disagrees, and checkpoint 4 still holds: 5..8 may be rewritten.
    assert not report.ok and report.first_broken_seq == 5 and "entries 5..8 were rewritten" in (report.reason or "")


def test_rewrite_after_the_last_checkpoint_in_the_database(database: Database, signer: Signer, log: Path) -> None:
    execute(database, "DELETE FROM audit_checkpoints WHERE seq = 8")
    rewrite_recomputing(database, 6)
    assert verify(database, signer).ok  # the database alone cannot know
    report = verify(database, signer, against=log)
    assert not report.ok and report.first_broken_seq == 5 and "differs from checkpoint 8" in (report.reason or "")


def test_delete_checkpoints(database: Database, signer: Signer, log: Path) -> None:
    execute(database, "DELETE FROM audit_checkpoints")
    assert verify(database, signer).ok  # the entries are intact; only the file knows what is missing
    report = verify(database, signer, against=log)
    assert not report.ok and report.first_broken_seq is None and report.broken_checkpoint_seq == 4
    assert "missing from the database" in (report.reason or "") and len(report.problems) == 2


def test_forge_checkpoint_with_another_key(database: Database, signer: Signer, log: Path, tmp_path: Path) -> None:
    forger = Signer.load_or_create(tmp_path / "forger.pem")
    head = entry_hash_at(database, 10)
    signature = base64.b64encode(forger.sign(checkpoint_message(10, head))).decode()
    execute(database, "INSERT INTO audit_checkpoints (seq, head_hash, key_id, signature, created_at) "
                      "VALUES (10, :h, :k, :s, CURRENT_TIMESTAMP)", h=head, k=forger.key_id, s=signature)
    report = verify(database, signer)
    assert not report.ok and report.broken_checkpoint_seq == 10 and "invalid signature" in (report.reason or "")


def test_unsigned_checkpoint_past_the_end_is_a_forgery_not_truncation(database: Database, signer: Signer,
                                                                      log: Path) -> None:
    # The false alarm: this was reported as "log truncated" before its signature was looked at.
    execute(database, "INSERT INTO audit_checkpoints (seq, head_hash, key_id, signature, created_at) "
                      "VALUES (50, :h, 'nobody', 'AAAA', CURRENT_TIMESTAMP)", h="ab" * 32)
    report = verify(database, signer)
    assert not report.ok and report.broken_checkpoint_seq == 50 and report.first_broken_seq is None
    assert "invalid signature" in (report.reason or "") and "truncated" not in " ".join(report.problems)


def test_forged_line_in_the_checkpoint_file(database: Database, signer: Signer, log: Path) -> None:
    append_private_line(log, '{"seq":10,"head_hash":"' + "cd" * 32 + '","key_id":"x","signature":"AAAA"}')
    report = verify(database, signer, against=log)
    assert not report.ok and report.broken_checkpoint_seq == 10 and "invalid signature" in (report.reason or "")


def test_edit_ts_by_a_microsecond_or_its_stored_format(database: Database, signer: Signer, log: Path) -> None:
    # Range filters compare the stored value: a changed separator (SQLite text) or a microsecond (PostgreSQL) counts.
    execute(database, "UPDATE audit_entries SET ts = replace(ts, ' ', 'T') WHERE seq = 7" if database.is_sqlite
            else "UPDATE audit_entries SET ts = ts + interval '1 microsecond' WHERE seq = 7")
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 7 and "ts" in (report.reason or "")


def test_edit_column_with_a_nul_or_an_escape(database: Database, signer: Signer, log: Path) -> None:
    # Characters JSON escapes must not let a different column value match the body's encoded text.
    execute(database, "UPDATE audit_entries SET action = action || char(0) WHERE seq = 5" if database.is_sqlite
            else "UPDATE audit_entries SET action = action || E'\\\\' WHERE seq = 5")
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 5 and "action" in (report.reason or "")


def test_columns_that_need_escaping_and_a_whole_second_verify_clean(database: Database, signer: Signer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # No false alarm from the fast column check: quotes, backslashes, control characters and non-ASCII in the
    # columns, and a timestamp whose isoformat() drops the zero fraction.
    monkeypatch.setattr(audit_service, "utcnow", lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    with database.transaction() as session:
        audit_service.record(session, actor='operator:"q"\\x', action="a\nb\u2028", resource=("t\u00e9", "id\t1"),
                             data={"k": "v"})
    monkeypatch.undo()
    append(database, 1)
    report = verify(database, signer)
    assert report.ok and report.entries == 2, report.reason

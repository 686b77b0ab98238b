"""The audit chain: appends, tamper detection, truncation detection, concurrency."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from control_plane.audit import service as audit
from control_plane.audit.schemas import VerifyReport
from control_plane.db.session import Database
from control_plane.signing import Signer


def append(database: Database, count: int, action: str = "test.append") -> None:
    for i in range(count):
        with database.transaction() as session:
            audit.record(session, actor="operator:t", action=action, resource=("thing", str(i)), data={"i": i})


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "keys" / "audit.pem")


def verify(database: Database, signer: Signer) -> VerifyReport:
    with database.transaction(write=False) as session:
        return audit.verify(session=session, public_key=signer.public_raw)


def test_clean_chain_verifies(database: Database, signer: Signer) -> None:
    append(database, 5)
    with database.transaction() as session:
        assert audit.create_checkpoint(session=session, signer=signer) is not None
        assert audit.create_checkpoint(session=session, signer=signer) is None  # head unchanged
    append(database, 2)
    report = verify(database, signer)
    assert report.ok and report.entries == 7 and report.head_seq == 7
    assert report.checkpoints_verified == 1 and report.last_checkpoint_seq == 5


def test_edited_entry_is_named(database: Database, signer: Signer) -> None:
    append(database, 6)
    with database.transaction() as session:
        body = json.loads(session.execute(text("SELECT body FROM audit_entries WHERE seq = 4")).scalar_one())
        body["data"]["i"] = 999
        session.execute(text("UPDATE audit_entries SET body = :b WHERE seq = 4"), {"b": json.dumps(body)})
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 4 and "content" in (report.reason or "")


def test_deleted_entry_is_a_gap(database: Database, signer: Signer) -> None:
    append(database, 5)
    with database.transaction() as session:
        session.execute(text("DELETE FROM audit_entries WHERE seq = 3"))
    report = verify(database, signer)
    assert not report.ok and report.first_broken_seq == 4 and "gap" in (report.reason or "")


def test_truncation_with_rewritten_head_is_caught_by_the_signed_checkpoint(database: Database,
                                                                           signer: Signer) -> None:
    append(database, 6)
    with database.transaction() as session:
        audit.create_checkpoint(session=session, signer=signer)
        # An attacker drops the last two entries and moves the head back so the chain looks whole.
        session.execute(text("DELETE FROM audit_entries WHERE seq > 4"))
        head_hash = session.execute(text("SELECT hash FROM audit_entries WHERE seq = 4")).scalar_one()
        session.execute(text("UPDATE audit_head SET seq = 4, hash = :h"), {"h": head_hash})
    report = verify(database, signer)
    assert not report.ok and "truncated" in (report.reason or "")


def test_forged_checkpoint_signature_is_rejected(database: Database, signer: Signer, tmp_path: Path) -> None:
    append(database, 3)
    forger = Signer.load_or_create(tmp_path / "other.pem")
    with database.transaction() as session:
        audit.create_checkpoint(session=session, signer=forger)
    report = verify(database, signer)
    assert not report.ok and "signature" in (report.reason or "")


def test_audit_entry_rolls_back_with_the_change(database: Database, signer: Signer) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        audit.record(session, actor="operator:t", action="doomed", resource=("thing", "x"), data={})
        raise RuntimeError("the change failed")
    assert verify(database, signer).entries == 0


def test_concurrent_appends_never_fork(database: Database, signer: Signer) -> None:
    threads = [threading.Thread(target=append, args=(database, 25, f"thread.{n}")) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = verify(database, signer)
    assert report.ok and report.entries == 100 and report.head_seq == 100


def test_export_is_json_lines_in_chain_order(database: Database) -> None:
    append(database, 3)
    with database.transaction(write=False) as session:
        lines = [json.loads(line) for line in audit.export_lines(session=session, batch=2)]
    assert [entry["seq"] for entry in lines] == [1, 2, 3]
    assert lines[1]["prev_hash"] == lines[0]["hash"] and lines[2]["data"] == {"i": 2}

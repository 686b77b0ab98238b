"""`edgeloop audit verify --against FILE`: the checkpoint file catches what the database alone cannot show."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EDGELOOP_DATABASE_URL", raising=False)
    return tmp_path / "data"


def test_deleted_tail_and_checkpoints_are_caught_against_the_file(data_dir: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    for name in ("alice", "bob", "carol"):
        assert runner.invoke(app, ["token", "create", "--role", "viewer", "--name", name]).exit_code == 0
    assert runner.invoke(app, ["audit", "checkpoint"]).exit_code == 0
    checkpoints = data_dir / "audit-checkpoints.jsonl"
    assert checkpoints.exists()
    with sqlite3.connect(data_dir / "edgeloop.db") as connection:
        # Drop the last entry and every checkpoint, and move the head back: the database looks whole.
        connection.execute("DELETE FROM audit_entries WHERE seq = 3")
        connection.execute("DELETE FROM audit_checkpoints")
        connection.execute("UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_entries WHERE seq = 2)")
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    caught = runner.invoke(app, ["audit", "verify", "--json", "--against", str(checkpoints)])
    assert caught.exit_code == 1 and '"first_broken_seq":3' in caught.output and "truncated" in caught.output


def test_a_damaged_checkpoint_file_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text('{"seq": 1}\n')
    result = runner.invoke(app, ["audit", "verify", "--against", str(damaged)])
    assert result.exit_code == 2 and "damaged.jsonl:1" in result.output

"""Data files are the owner's alone: the SQLite database and its -wal/-shm, keys, tokens, checkpoint logs."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from control_plane.bootstrap import bootstrap_admin
from control_plane.db.migrate import upgrade
from control_plane.main import create_app
from control_plane.settings import Settings


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def usual_umask(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The common 022 umask, under which files were created 0644 and directories 0755 (and the default SQLite)."""
    monkeypatch.delenv("EDGELOOP_DATABASE_URL", raising=False)
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_sqlite_install_is_private(tmp_path: Path, usual_umask: None) -> None:
    settings = Settings(data_dir=tmp_path / "data", audit_checkpoint_seconds=3600)
    app = create_app(settings)
    upgrade(settings.resolved_database_url)
    assert bootstrap_admin(settings) is not None
    with TestClient(app) as client:
        token = (settings.data_dir / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1/models", json={"name": "m"}, headers=headers).status_code == 201
        assert client.post("/api/v1/audit/checkpoints", headers=headers).status_code == 201
        database = settings.data_dir / "edgeloop.db"
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm"), settings.data_dir / "admin.token",
                 settings.keys_dir / "audit.pem", settings.data_dir / "audit-checkpoints.jsonl"]
        assert {str(f.relative_to(settings.data_dir)): mode(f) for f in files} == {
            str(f.relative_to(settings.data_dir)): 0o600 for f in files}
    assert mode(settings.data_dir) == 0o700 and mode(settings.keys_dir) == 0o700


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path, usual_umask: None) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    database = data / "edgeloop.db"
    with sqlite3.connect(database) as connection:  # made by an older version: 0644, with a WAL beside it
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
    assert mode(database) == 0o644
    create_app(Settings(data_dir=data, audit_checkpoint_seconds=3600))
    assert mode(database) == 0o600 and mode(data) == 0o700

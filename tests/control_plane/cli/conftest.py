"""CLI tests run the real `edgeloop` app against a SQLite file in the test's own data dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point EDGELOOP_DATA_DIR at a fresh folder (its default SQLite database); return that folder."""
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EDGELOOP_DATABASE_URL", raising=False)
    return tmp_path / "data"

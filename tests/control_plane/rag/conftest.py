"""Fixtures for the RAG tests: the repo's real runbooks copied into a temp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

RUNBOOKS = Path(__file__).resolve().parents[3] / "runbooks"


@pytest.fixture
def runbook_dir(tmp_path: Path) -> Path:
    target = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, target)
    return target

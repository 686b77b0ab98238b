"""`edgeloop chat` as a subprocess against a served control plane, driven through stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from control_plane.auth.roles import Role
from control_plane.db.session import Database
from tests.agents.harness import SimFleet, token
from tests.control_plane.events.conftest import Served

ROOT = Path(__file__).resolve().parents[3]


def test_chat_repl_streams_answers_evidence_and_history(scenario: SimFleet, served: Served,
                                                        database: Database) -> None:
    bearer = token(database, "carol", Role.OPERATOR)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGELOOP_URL": served.url, "EDGELOOP_TOKEN": bearer}
    script = "why did sensor-clf degrade in eu-west?\nhow do I roll back a canary?\n/history\n/new\n/quit\n"
    done = subprocess.run([sys.executable, "-m", "control_plane.cli.main", "chat"], input=script, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Templated answer" in out and "sensor-clf in eu-west" in out
    assert "· get_drift_report ok" in out
    assert "↳ runbooks/rollback-procedure.md § " in out
    assert "user> why did sensor-clf degrade in eu-west?" in out
    assert out.count("thread ") >= 2
    assert bearer not in out and bearer not in done.stderr


def test_chat_without_a_token_says_so(served: Served) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_TOKEN"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "control_plane.cli.main", "chat", "--url", served.url], input="",
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "token" in (done.stdout + done.stderr)

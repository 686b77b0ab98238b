"""The README's first command, minus the venv: the demo closes the loop on embedded defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.audit import service as audit
from control_plane.db.session import Database
from control_plane.demo import run_demo
from control_plane.mqtt.broker import free_port
from control_plane.settings import Settings


def test_demo_rolls_the_quantised_model_out_to_a_simulated_fleet(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    result = run_demo(Settings(data_dir=data_dir, port=free_port()), devices=3, once=True, rollout_timeout=90)
    assert result.rollout_state == "succeeded" and result.devices_activated == 3
    assert result.broker_authenticated  # mosquitto with a password file and ACL; devices log in as themselves
    assert (data_dir / "admin.token").stat().st_mode & 0o777 == 0o600

    # A second start reuses the model, re-keys the devices and rolls out again.
    settings = Settings(data_dir=data_dir, port=free_port())
    again = run_demo(settings, devices=3, once=True, rollout_timeout=90)
    assert again.rollout_state == "succeeded" and again.rollout_id != result.rollout_id

    database = Database(settings.resolved_database_url)
    try:
        with database.transaction(write=False) as session:
            report = audit.verify(session=session, public_key=None)
            actions = [e.action for e in audit.list_entries(session=session, limit=10_000)]
    finally:
        database.dispose()
    assert report.ok
    assert actions.count("device.provision") == 3 and actions.count("device.rotate_token") == 3
    assert actions.count("rollout.succeeded") == 2 and actions.count("model_version.create") == 1


@pytest.mark.slow
@pytest.mark.mqtt
def test_demo_auto_approve_closes_the_loop_and_exits_zero(tmp_path: Path) -> None:
    """`edgeloop demo --auto-approve` as a process: exit 0, the timings printed, the audit log intact."""
    data_dir = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "demo", "--auto-approve", "--devices", "4",
         "--data-dir", str(data_dir), "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=420, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"time to first pending proposal: \d+\.\d+s from start", output), output[-2000:]
    assert re.search(r"approval → recovery verified: \d+\.\d+s .*verification recovered", output), output[-2000:]
    assert "/ui/approvals" in output

    database = Database(Settings(data_dir=data_dir).resolved_database_url)
    try:
        with database.transaction(write=False) as session:
            report = audit.verify(session=session, public_key=None)
            actions = [e.action for e in audit.list_entries(session=session, limit=100_000)]
    finally:
        database.dispose()
    assert report.ok
    assert actions.count("proposal.approved") == 1 and actions.count("proposal.executed") == 1

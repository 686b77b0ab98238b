"""The README's first command, minus the venv: the demo closes the loop on embedded defaults."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
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


def _demo(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "control_plane.cli.main", "demo", "--data-dir", str(data_dir), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}


@pytest.mark.slow
@pytest.mark.mqtt
def test_demo_auto_approve_closes_the_loop_at_fifty_devices_and_exits_zero(tmp_path: Path) -> None:
    """`edgeloop demo --auto-approve` at 50 devices: recovery verified, then retrained and canaried (or no win), exit 0.

    At 50 devices (not at 4) the drift monitor held SQLite's write lock for over a minute per pass and the first
    windows after the rollback straddled it: the recovery was never verified.
    """
    data_dir = tmp_path / "demo"
    done = subprocess.run(_demo(data_dir, "--auto-approve", "--port", str(free_port())), env=_env(),
                          capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"time to first pending proposal: \d+\.\d+s from start", output), output[-2000:]
    assert re.search(r"approval → recovery verified: \d+\.\d+s .*rollback succeeded, verification recovered",
                     output), output[-2000:]
    # Then the retraining leg: rows posted, the request approved, the job's numbers, one of the two honest ends.
    assert re.search(r"labelled rows for retrain\.request prop_\w+: [\d,]+ rows of \d+ telemetry windows of 25 devices",
                     output), output[-3000:]
    assert re.search(r"training job tj_\w+: (canary_proposed|challenger_not_better) in \d+\.\d+s", output), \
        output[-3000:]
    assert re.search(r"challenger v\d+ vs champion v1: accuracy on the drifted cohort's held-out rows [\d.]+ vs [\d.]+ "
                     r".*challenger int8 vs fp32 -?[\d.e-]+", output), output[-3000:]
    ended = re.search(r"retraining → (canary succeeded: canary ro_\w+ succeeded|challenger did not win)", output)
    assert ended, output[-3000:]
    canary = ended.group(1).startswith("canary")
    assert re.search(r"timings \(50 devices\): start → fleet up \d+\.\d+s \(provisioned and connected in \d+\.\d+s\); "
                     r"fault injected → first proposal pending \d+\.\d+s \(the rollback's \d+\.\d+s\); "
                     r"approval → recovery verified \d+\.\d+s; retraining \d+\.\d+s \(training job \d+\.\d+s, "
                     r"canary approval → rollout (succeeded \d+\.\d+s|- -)\); "
                     r"total \d+\.\d+s", output), output[-2000:]
    assert "/ui/approvals" in output
    assert "Traceback" not in output and "database is locked" not in output, output[-4000:]

    database = Database(Settings(data_dir=data_dir).resolved_database_url)
    try:
        with database.transaction(write=False) as session:
            report = audit.verify(session=session, public_key=None)
            actions = [e.action for e in audit.list_entries(session=session, limit=100_000)]
    finally:
        database.dispose()
    assert report.ok
    # The rollback and the retrain.request, and the challenger's canary when it won; one job, audited.
    approved = 3 if canary else 2
    assert actions.count("proposal.approved") == approved and actions.count("proposal.executed") == approved
    assert actions.count("training_job.queued") == 1 and actions.count("training_job.succeeded") == 1


@pytest.mark.slow
@pytest.mark.mqtt
def test_demo_auto_approve_exits_zero_when_the_challenger_does_not_win_and_says_why(tmp_path: Path) -> None:
    """A margin no challenger can beat: the honest no-win end, its incident note printed, no canary proposed."""
    data_dir = tmp_path / "demo"
    done = subprocess.run(_demo(data_dir, "--auto-approve", "--port", str(free_port())),
                          env={**_env(), "EDGELOOP_TRAINING_WIN_MARGIN": "1.0"},
                          capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"training job tj_\w+: challenger_not_better in \d+\.\d+s", output), output[-3000:]
    assert re.search(r"retraining → challenger did not win: incident inc_\w+ notes: challenger v\d+: accuracy on "
                     r"the cohort's held-out recent rows [\d.]+ vs champion v1 [\d.]+ .*not proposed: ", output), \
        output[-3000:]
    assert "rollout.canary" not in output and "Traceback" not in output, output[-4000:]


def _children(pid: int) -> set[int]:
    """Return the live child processes of ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.mqtt
def test_ctrl_c_stops_the_demo_quietly_leaving_no_process_or_port(tmp_path: Path) -> None:
    """SIGINT once proposals are pending: exit 0, no traceback or lock error, the broker and the API port gone."""
    port = free_port()
    demo = subprocess.Popen(_demo(tmp_path / "demo", "--devices", "4", "--port", str(port)), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 420
        while not any("Ctrl-C stops the demo" in line for line in lines) and time.monotonic() < deadline:
            assert demo.poll() is None, "".join(lines)[-4000:]
            time.sleep(0.5)
        output = "".join(lines)
        assert "pending proposal" in output, output[-4000:]
        broker_port = int(re.findall(r"mosquitto at mqtt://127\.0\.0\.1:(\d+)", output)[0])
        children = _children(demo.pid)
        assert children and _listening(port) and _listening(broker_port)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0
    finally:
        if demo.poll() is None:
            for child in _children(demo.pid):  # the broker and fleet too: a failed test must not leave them running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            demo.kill()
            demo.wait()
    reader.join(10)
    output = "".join(lines)
    assert "Traceback" not in output and "database is locked" not in output, output[-4000:]
    assert "ERROR" not in output and "WARNING" not in output, output[-4000:]
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "a child process outlived the demo"
    assert not _listening(port) and not _listening(broker_port)

"""`edgeloop train`: a job in the foreground, by model or by recorded request, idempotent when rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.approvals.models import RetrainRequest
from control_plane.cli.main import app
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.registry import pipeline
from control_plane.settings import Settings
from control_plane.training import jobs
from control_plane.training.schemas import RowsCreate
from control_plane.training.service import post_rows
from tests.control_plane.fleet.conftest import wait_for
from tests.control_plane.training.conftest import MODEL, labelled_rows, store_windows

ROOT = Path(__file__).resolve().parents[3]

runner = CliRunner()


def _summary(output: str) -> dict[str, object]:
    return dict(json.loads(output[output.index("{"):]))


def test_train_runs_a_job_in_the_foreground(settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch,
                                            champion: pipeline.PipelineResult) -> None:
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EDGELOOP_DATABASE_URL", settings.resolved_database_url)
    nothing = runner.invoke(app, ["train", "--model", MODEL, "--version", "1", "--group", "north"])
    assert nothing.exit_code == 0, nothing.output
    assert _summary(nothing.output)["outcome"] == "no_new_labelled_rows"

    keys = store_windows(database, "north", 8)
    now = utcnow()
    with database.transaction() as session:
        post_rows(session=session, request=RowsCreate.model_validate(labelled_rows(keys, drift=True)),
                  actor="operator:test")
        request = RetrainRequest(model_name=MODEL, model_version=1, window_start=now - timedelta(hours=1),
                                 window_end=now + timedelta(minutes=1), cohort={"device_group": "north"},
                                 created_by="approver:alice")
        session.add(request)
        session.flush()
        request_id = request.id
    trained = runner.invoke(app, ["train", "--request", request_id])
    assert trained.exit_code == 0, trained.output
    summary = _summary(trained.output)
    assert summary["state"] == "succeeded" and summary["challenger_version"] == 2 and summary["proposal_id"]
    again = runner.invoke(app, ["train", "--request", request_id])
    assert again.exit_code == 0 and "already succeeded" in again.output
    assert _summary(again.output)["challenger_version"] == 2

    assert runner.invoke(app, ["train", "--request", "rtr_missing"]).exit_code == 1
    assert runner.invoke(app, ["train", "--model", MODEL]).exit_code == 1


def test_train_watch_is_a_dedicated_worker_that_stops_on_ctrl_c(settings: Settings, database: Database,
                                                                  champion: pipeline.PipelineResult) -> None:
    env = {**os.environ, "EDGELOOP_DATA_DIR": str(settings.data_dir), "PYTHONPATH": str(ROOT),
           "EDGELOOP_DATABASE_URL": settings.resolved_database_url, "EDGELOOP_TRAINING_POLL_SECONDS": "0.1"}
    process = subprocess.Popen([sys.executable, "-m", "control_plane.cli.main", "train", "--watch"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        now = utcnow()
        with database.transaction() as session:
            job_id = jobs.enqueue(session, model_name=MODEL, model_version=1, window_start=now - timedelta(hours=1),
                                  window_end=now, cohort={}, actor="admin:test").id

        def finished() -> tuple[str, str | None] | None:
            with database.transaction(write=False) as session:
                job = jobs.get_job(session=session, job_id=job_id)
            return (job.state, job.error) if job.state in ("succeeded", "failed") else None

        assert wait_for(finished, timeout=120, interval=0.2) == ("succeeded", None)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # a failed test must not leave a worker polling the database
            process.communicate()
            raise
    assert process.returncode == 0, output
    assert "training worker stopped" in output  # (Ctrl-C may land before it prints the job's line: not asserted)

"""`edgeloop train`: run one retraining job in the foreground (the same runner the worker uses)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Annotated

import typer

from control_plane.cli.context import CLI_ACTOR, console, load_settings
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.errors import Invalid, NotFound
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings


def train(
    request: Annotated[str | None, typer.Option("--request", help="A recorded retraining request's id (rtr_...).")]
    = None,
    model: Annotated[str | None, typer.Option("--model", help="Retrain this model (with --version).")] = None,
    version: Annotated[int | None, typer.Option("--version", help="The champion version to retrain.")] = None,
    hours: Annotated[float, typer.Option(help="With --model: labelled rows of the last HOURS.")] = 24.0,
    group: Annotated[str | None, typer.Option(help="With --model: only this device group's rows.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help=(
        "Run as a dedicated training worker until Ctrl-C (pair with EDGELOOP_TRAINING_WORKER=false on the API "
        "replicas, so training does not compete with requests for their CPU)."))] = False,
) -> None:
    """Retrain on the registered dataset plus newly labelled rows; compare; propose a canary if it wins."""
    from control_plane.approvals.models import RetrainRequest
    from control_plane.training import jobs
    from control_plane.training.schemas import JobRead, JobState
    from control_plane.training.worker import TrainingWorker

    settings = load_settings()
    if watch:
        _watch(settings)
        return
    if (request is None) == (model is None) or (model is not None and version is None):
        raise Invalid("give --request ID, or --model NAME --version V (or --watch)")
    database = Database(settings.resolved_database_url)
    try:
        with database.transaction() as session:
            if request is not None:
                found = session.get(RetrainRequest, request)
                if found is None:
                    raise NotFound(f"retrain request {request!r} not found")
                job = jobs.enqueue_request(session, found, actor=CLI_ACTOR)
            else:
                assert model is not None and version is not None
                now = utcnow()
                job = jobs.enqueue(session, model_name=model, model_version=version,
                                   window_start=now - timedelta(hours=hours), window_end=now,
                                   cohort={"device_group": group} if group else {}, actor=CLI_ACTOR)
            job_id, state = job.id, job.state
        if state in (JobState.SUCCEEDED, JobState.FAILED):
            console.print(f"training job {job_id} already {state}; nothing to run")
        else:
            console.print(f"training job {job_id}: running in the foreground …")
            worker = TrainingWorker(database, ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes),
                                    settings)
            if worker.run_once(job_id) is None:
                console.print(f"training job {job_id} is running elsewhere (its claim has not expired)")
                raise typer.Exit(1)
        with database.transaction(write=False) as session:
            done = JobRead.model_validate(jobs.get_job(session=session, job_id=job_id))
    finally:
        database.dispose()
    summary = {"id": done.id, "state": done.state, "outcome": done.outcome, "error": done.error,
               "challenger_version": done.challenger_version, "proposal_id": done.proposal_id,
               "decision": done.comparison.get("decision", {}).get("reason") or done.data.get("reason"),
               "timings": done.timings}
    console.print_json(json.dumps(summary, default=str))
    if done.state != JobState.SUCCEEDED:
        raise typer.Exit(1)


def _watch(settings: Settings) -> None:
    """Claim and run jobs as they are queued, until interrupted."""
    from control_plane.training.worker import TrainingWorker

    database = Database(settings.resolved_database_url)
    worker = TrainingWorker(database, ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes), settings)
    console.print(f"training worker {worker.worker_id}: waiting for queued jobs (Ctrl-C stops it)")
    try:
        while True:
            state = worker.run_once()
            if state is not None:
                console.print(f"training job finished: {state}")
            else:
                time.sleep(settings.training_poll_seconds)
    except KeyboardInterrupt:
        console.print("training worker stopped")
    finally:
        database.dispose()

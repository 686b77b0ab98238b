"""The job queue: enqueue once per request, claim exactly once (row lock or SQLite's write lock), finish or fail.

1. An approved retrain.request commits its RetrainRequest and a ``queued`` job together (RetrainExecutor).
2. A worker claims the oldest queued job (or a ``running`` one whose lease ran out): ``running``, a fresh claim
   token, ``attempts + 1``; SKIP LOCKED on PostgreSQL, and SQLite writers begin IMMEDIATE, so two claimers never
   get the same job.
3. Training runs outside any transaction; registering the challenger, the comparison, the decision and the
   ``succeeded`` mark commit together under the job's row lock after the token is checked (runner.py). A crash
   before that commit leaves nothing registered, and the re-claimed job registers one challenger.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from control_plane.approvals.models import RetrainRequest
from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.errors import NotFound
from control_plane.incidents import service as incidents
from control_plane.incidents.schemas import TimelineKind
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.training.models import TrainingJob
from control_plane.training.schemas import JobState

WORKER_ACTOR = "system:training"


@dataclass(frozen=True)
class Claim:
    """A claimed job and the token that proves this worker still owns it."""

    job_id: str
    token: str


def enqueue_request(session: Session, request: RetrainRequest, *, actor: str) -> TrainingJob:
    """Return the request's job, creating it ``queued`` the first time (one job per request)."""
    existing = session.scalar(select(TrainingJob).where(TrainingJob.retrain_request_id == request.id))
    if existing is not None:
        return existing
    job = _new_job(session, actor=actor, retrain_request_id=request.id, incident_id=request.incident_id,
                   model_name=request.model_name, model_version=request.model_version,
                   window_start=request.window_start, window_end=request.window_end, cohort=dict(request.cohort))
    request.state = "queued"
    session.flush()
    return job


def enqueue(session: Session, *, model_name: str, model_version: int, window_start: datetime, window_end: datetime,
            cohort: dict[str, Any], actor: str) -> TrainingJob:
    """Queue a job with no request behind it (`edgeloop train --model NAME --version V`)."""
    return _new_job(session, actor=actor, retrain_request_id=None, incident_id=None, model_name=model_name,
                    model_version=model_version, window_start=window_start, window_end=window_end, cohort=cohort)


def _new_job(session: Session, *, actor: str, **fields: Any) -> TrainingJob:
    job = TrainingJob(state=JobState.QUEUED.value, attempts=0, created_by=actor, updated_at=utcnow(), **fields)
    session.add(job)
    session.flush()
    audit.record(session, actor=actor, action="training_job.queued", resource=("training_job", job.id),
                 data={"model": job.model_name, "version": job.model_version, "cohort": job.cohort,
                       "retrain_request_id": job.retrain_request_id, "incident_id": job.incident_id,
                       "window": [job.window_start.isoformat(), job.window_end.isoformat()]})
    return job


def _claimable(lease_seconds: float) -> Any:
    stale = utcnow() - timedelta(seconds=lease_seconds)
    return or_(TrainingJob.state == JobState.QUEUED.value,
               and_(TrainingJob.state == JobState.RUNNING.value, TrainingJob.claimed_at < stale))


def has_work(database: Database, lease_seconds: float) -> bool:
    """Return whether a job is claimable: a cheap read, so an idle SQLite worker never takes the write lock."""
    with database.transaction(write=False) as session:
        return session.scalar(select(TrainingJob.id).where(_claimable(lease_seconds)).limit(1)) is not None


def claim_next(database: Database, *, worker_id: str, lease_seconds: float, max_attempts: int,
               job_id: str | None = None) -> Claim | None:
    """Claim the oldest claimable job (or ``job_id``); None when there is none to run."""
    with database.transaction() as session:
        query = select(TrainingJob).where(_claimable(lease_seconds))
        if job_id is not None:
            query = query.where(TrainingJob.id == job_id)
        query = query.order_by(TrainingJob.created_at, TrainingJob.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job = session.scalar(query)
        if job is None:
            return None
        reclaimed = job.state == JobState.RUNNING
        if job.attempts >= max_attempts:
            fail(session, job, f"gave up after {job.attempts} attempts that did not finish")
            return None
        token = secrets.token_hex(8)
        now = utcnow()
        job.state, job.claim_token, job.claimed_at, job.attempts = JobState.RUNNING.value, token, now, job.attempts + 1
        job.started_at, job.updated_at = job.started_at or now, now
        set_request_state(session, job, "training")
        session.flush()
        audit.record(session, actor=WORKER_ACTOR, action="training_job.running", resource=("training_job", job.id),
                     data={"attempt": job.attempts, "reclaimed": reclaimed, "worker": worker_id})
        return Claim(job.id, token)


def locked_if_owned(session: Session, claim: Claim) -> TrainingJob | None:
    """Return the job locked for update when this claim still owns it, else None (another worker took over)."""
    job = session.scalar(select(TrainingJob).where(TrainingJob.id == claim.job_id).with_for_update())
    if job is None or job.state != JobState.RUNNING or job.claim_token != claim.token:
        return None
    return job


def fail(session: Session, job: TrainingJob, reason: str) -> None:
    """Mark the job failed with the reason: audited, and on the incident's timeline."""
    now = utcnow()
    job.state, job.error, job.finished_at, job.updated_at = JobState.FAILED.value, reason[:4000], now, now
    set_request_state(session, job, "failed")
    session.flush()
    audit.record(session, actor=WORKER_ACTOR, action="training_job.failed", resource=("training_job", job.id),
                 data={"error": reason[:1000], "attempts": job.attempts})
    note(session, job, {"status": "failed", "error": reason[:1000],
                        "summary": f"training job {job.id} failed: {reason[:500]}"})


def note(session: Session, job: TrainingJob, body: dict[str, Any]) -> None:
    """Put a step of the job on its incident's timeline (when it has an incident)."""
    if job.incident_id:
        incidents.add_entry(session, job.incident_id, TimelineKind.COMMENT, WORKER_ACTOR,
                            {"training_job_id": job.id, "model": job.model_name, "version": job.model_version,
                             **body})


def set_request_state(session: Session, job: TrainingJob, state: str) -> None:
    """Mirror the job's progress on its retraining request."""
    if job.retrain_request_id:
        request = session.get(RetrainRequest, job.retrain_request_id)
        if request is not None:
            request.state = state


def get_job(*, session: Session, job_id: str) -> TrainingJob:
    """Return a job or raise NotFound."""
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise NotFound(f"training job {job_id!r} not found")
    return job


def list_jobs(*, session: Session, state: JobState | None = None, incident_id: str | None = None,
              limit: int = 100) -> list[TrainingJob]:
    """Return jobs, newest first."""
    query = select(TrainingJob).order_by(TrainingJob.created_at.desc(), TrainingJob.id).limit(limit)
    if state is not None:
        query = query.where(TrainingJob.state == state.value)
    if incident_id:
        query = query.where(TrainingJob.incident_id == incident_id)
    return list(session.scalars(query))


def _label_jobs(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(TrainingJob.id, TrainingJob.model_name, TrainingJob.model_version)
                           .where(TrainingJob.id.in_(ids)))
    return {r.id: f"retrain {r.model_name} v{r.model_version}" for r in rows}


lineage.register_labeler(NodeKind.TRAINING_JOB, _label_jobs)

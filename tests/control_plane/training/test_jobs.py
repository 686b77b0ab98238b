"""Exactly once on both engines: two claimers, a job re-claimed after a crash, bad data recorded as a failure."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select, update

from control_plane.audit.models import AuditEntry
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.registry import pipeline
from control_plane.registry.models import ModelVersion, RegisteredModel
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.training import jobs
from control_plane.training.models import TrainingJob
from control_plane.training.runner import run_claimed
from control_plane.training.schemas import RowsCreate
from control_plane.training.service import post_rows
from tests.control_plane.training.conftest import MODEL, labelled_rows, store_windows

LEASE = 60.0


def _enqueue(database: Database, model: str = MODEL, group: str = "north") -> str:
    now = utcnow()
    with database.transaction() as session:
        return jobs.enqueue(session, model_name=model, model_version=1, window_start=now - timedelta(hours=1),
                            window_end=now + timedelta(minutes=1), cohort={"device_group": group},
                            actor="admin:test").id


def _claim(database: Database, worker: str) -> jobs.Claim | None:
    return jobs.claim_next(database, worker_id=worker, lease_seconds=LEASE, max_attempts=3)


def _job(database: Database, job_id: str) -> TrainingJob:
    with database.transaction(write=False) as session:
        return jobs.get_job(session=session, job_id=job_id)


def _post(database: Database, group: str, count: int, drift: bool = True) -> None:
    keys = store_windows(database, group, count)
    with database.transaction() as session:
        post_rows(session=session, request=RowsCreate.model_validate(labelled_rows(keys, drift=drift)),
                  actor="operator:test")


def test_two_workers_racing_claim_a_job_exactly_once(db_url: str, database: Database) -> None:
    job_id = _enqueue(database)
    replicas = [Database(db_url), Database(db_url)]
    barrier = threading.Barrier(2)
    claims: list[jobs.Claim | None] = []

    def claim(replica: Database, name: str) -> None:
        barrier.wait()
        claims.append(_claim(replica, name))

    threads = [threading.Thread(target=claim, args=(replica, f"w{i}")) for i, replica in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for replica in replicas:
        replica.dispose()
    won = [c for c in claims if c is not None]
    assert len(claims) == 2 and len(won) == 1 and won[0].job_id == job_id
    job = _job(database, job_id)
    assert (job.state, job.attempts, job.claim_token) == ("running", 1, won[0].token)
    assert _claim(database, "late") is None  # a live claim is not taken over


def test_a_job_reclaimed_after_a_crash_registers_one_challenger(settings: Settings, database: Database,
                                                                champion: pipeline.PipelineResult) -> None:
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    _post(database, "north", 8)
    job_id = _enqueue(database)
    crashed = _claim(database, "worker-a")  # worker A claims, then dies before it commits anything
    assert crashed is not None
    with database.transaction() as session:
        session.execute(update(TrainingJob).where(TrainingJob.id == job_id)
                        .values(claimed_at=utcnow() - timedelta(seconds=LEASE + 1)))
    retried = _claim(database, "worker-b")
    assert retried is not None and retried.token != crashed.token
    assert run_claimed(database, store, settings, retried) == "succeeded"
    # Worker A was only stalled: it finishes its training, finds its claim gone and registers nothing.
    assert run_claimed(database, store, settings, crashed) == "succeeded"
    assert run_claimed(database, store, settings, retried) == "succeeded"  # a repeated run changes nothing
    job = _job(database, job_id)
    assert (job.attempts, job.challenger_version, job.outcome) == (2, 2, "canary_proposed")
    with database.transaction(write=False) as session:
        versions = session.scalar(select(func.count()).select_from(ModelVersion).join(RegisteredModel)
                                  .where(RegisteredModel.name == MODEL))
        succeeded = session.scalar(select(func.count()).select_from(AuditEntry)
                                   .where(AuditEntry.action == "training_job.succeeded"))
    assert (versions, succeeded) == (2, 1)


def test_bad_data_and_abandoned_jobs_fail_with_the_reason(settings: Settings, database: Database,
                                                          champion: pipeline.PipelineResult) -> None:
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    with database.transaction() as session:
        model = RegisteredModel(name="no-lineage", created_by="test")
        session.add(model)
        session.flush()
        session.add(ModelVersion(model_id=model.id, version=1, created_by="test"))
    orphan = _enqueue(database, model="no-lineage")
    claim = _claim(database, "w")
    assert claim is not None and run_claimed(database, store, settings, claim) == "failed"
    assert "has no training run with a registered dataset" in (_job(database, orphan).error or "")

    keys = store_windows(database, "west", 2, prefix="narrow")
    with database.transaction() as session:
        post_rows(session=session, actor="operator:test", request=RowsCreate.model_validate(
            {"windows": [{"device_id": d, "window_seq": s, "features": [[1.0, 2.0, 3.0]] * 20,
                          "labels": [1] * 20} for d, s in keys]}))
    narrow = _enqueue(database, group="west")
    claim = _claim(database, "w")
    assert claim is not None and run_claimed(database, store, settings, claim) == "failed"
    assert "has rows of 3 features; the model takes 64" in (_job(database, narrow).error or "")

    abandoned = _enqueue(database, group="nowhere")
    for _ in range(3):
        assert _claim(database, "w") is not None
        with database.transaction() as session:
            session.execute(update(TrainingJob).where(TrainingJob.id == abandoned)
                            .values(claimed_at=utcnow() - timedelta(seconds=LEASE + 1)))
    assert _claim(database, "w") is None
    job = _job(database, abandoned)
    assert job.state == "failed" and "gave up after 3 attempts" in (job.error or "")
    with database.transaction(write=False) as session:
        failed = session.scalar(select(func.count()).select_from(AuditEntry)
                                .where(AuditEntry.action == "training_job.failed"))
    assert failed == 3

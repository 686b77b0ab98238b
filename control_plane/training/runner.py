"""Run one claimed job: read the plan, train and quantise outside any transaction, then commit the outcome once."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.errors import EdgeloopError
from control_plane.registry import onnx_tools, pipeline
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.training import data, evaluate, jobs
from control_plane.training.models import TrainingJob
from control_plane.training.register import Built, link_job, propose_canary, register_challenger
from control_plane.training.schemas import JobOutcome, JobState

log = logging.getLogger(__name__)


def run_claimed(database: Database, store: ArtifactStore, settings: Settings, claim: jobs.Claim) -> str:
    """Run the job this claim owns and return its final state; every failure is recorded on the job."""
    started = time.perf_counter()
    try:
        with database.transaction(write=False) as session:
            job = jobs.get_job(session=session, job_id=claim.job_id)
            plan = data.plan(session, job)
        built, skipped, timings = _build(plan, job, store, settings)
        timings["total_s"] = round(time.perf_counter() - started, 3)
        with database.transaction() as session:
            owned = jobs.locked_if_owned(session, claim)
            if owned is None:
                return jobs.get_job(session=session, job_id=claim.job_id).state  # another worker took over
            _finish(session, store, owned, plan, built, skipped, timings, settings)
            return owned.state
    except Exception as exc:
        if isinstance(exc, EdgeloopError):
            reason = exc.message
        else:
            log.exception("training job %s failed", claim.job_id)
            reason = f"{type(exc).__name__}: {exc}"
        with database.transaction() as session:
            owned = jobs.locked_if_owned(session, claim)
            if owned is None:
                return jobs.get_job(session=session, job_id=claim.job_id).state
            jobs.fail(session, owned, reason)
            return owned.state


def _build(plan: data.Plan, job: TrainingJob, store: ArtifactStore, settings: Settings
           ) -> tuple[Built | None, dict[str, Any] | None, dict[str, Any]]:
    """Regenerate and extend the data, train, convert, quantise and compare; skip when there is nothing new."""
    reference = data.reference(plan)
    recent = data.recent(plan, reference.x_train.shape[1])
    sources = {"reference_dataset_id": plan.dataset_id, "reference_fingerprint": plan.dataset_fingerprint,
               "labelled_windows": len(plan.windows), "devices": sorted({w["device_id"] for w in plan.windows}),
               "cohort": job.cohort, "window": [job.window_start.isoformat(), job.window_end.isoformat()],
               "rows": {"reference_train": len(reference.y_train), "reference_test": len(reference.y_test),
                        "recent_train": len(recent.y_train), "recent_holdout": len(recent.y_holdout)},
               "live_labels": plan.live}
    if recent.rows < settings.training_min_samples:
        return None, {**sources, "reason": f"{recent.rows} labelled row(s) from the cohort in the window, "
                                           f"{settings.training_min_samples} needed"}, {}
    extended = pipeline.TrainingData(
        name=f"{plan.dataset_name}.labelled", feature_names=reference.feature_names,
        x_train=np.concatenate([reference.x_train, recent.x_train]),
        y_train=np.concatenate([reference.y_train, recent.y_train]),
        x_test=reference.x_test, y_test=reference.y_test)
    hidden = tuple(int(h) for h in plan.params.get("hidden", (256, 256)))
    static = plan.params.get("quantization") == "static"
    timings: dict[str, Any] = {}
    clock = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = pipeline.train_mlp(extended, hidden=hidden)
    timings["train_s"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    fp32 = onnx_tools.sklearn_to_onnx(estimator, extended.x_train.shape[1])
    with tempfile.TemporaryDirectory(prefix="edgeloop-retrain-") as workdir:
        int8 = onnx_tools.quantize_int8(fp32, Path(workdir), calibration=extended.x_train[:200] if static else None)
    timings["quantise_s"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    champion = {q: store.open_existing(sha).read_bytes() for q, sha in plan.champion_artifacts.items()
                if q in ("fp32", "int8")}
    scores = evaluate.compare(champion, {"fp32": fp32, "int8": int8}, reference=(reference.x_test, reference.y_test),
                              recent=(recent.x_holdout, recent.y_holdout, recent.groups_holdout))
    decision = evaluate.decide(scores, champion=evaluate.deployed(champion), margin=settings.training_win_margin)
    timings["eval_s"] = round(time.perf_counter() - clock, 3)
    timings["load_average_1m"] = round(os.getloadavg()[0], 2)
    digest = hashlib.sha256(pipeline.fingerprint(extended).encode())
    for array in (recent.x_holdout, recent.y_holdout):
        digest.update(np.ascontiguousarray(array).tobytes())
    params = {"hidden": list(hidden), "quantization": "static" if static else "dynamic",
              "champion": f"{job.model_name}@{job.model_version}", "training_job_id": job.id,
              "incident_id": job.incident_id, "cohort": job.cohort, "window_start": job.window_start.isoformat(),
              "window_end": job.window_end.isoformat(), "reference_dataset_id": plan.dataset_id,
              "labelled_windows": len(plan.windows), "holdout_share": data.HOLDOUT_SHARE,
              "split_seed": data.SPLIT_SEED, "n_iter": int(estimator[-1].n_iter_),
              "warnings": sorted({type(w.message).__name__ for w in caught})}
    built = Built(data=extended, fingerprint="sha256:" + digest.hexdigest(),
                  predicted_train=np.asarray(estimator.predict(extended.x_train)), fp32=fp32, int8=int8,
                  params=params, sources=sources, scores=scores, decision=decision)
    return built, None, timings


def _finish(session: Any, store: ArtifactStore, job: TrainingJob, plan: data.Plan, built: Built | None,
            skipped: dict[str, Any] | None, timings: dict[str, Any], settings: Settings) -> None:
    """Register, decide and mark succeeded in the caller's transaction (one commit)."""
    link_job(session, job)
    if built is None:
        assert skipped is not None
        job.outcome, job.data = JobOutcome.NO_NEW_DATA.value, skipped
        summary = (f"no challenger trained: {skipped['reason']}; the champion's live accuracy in the cohort from "
                   f"window labels: {plan.live['champion_accuracy']} over {plan.live['rows']} labelled row(s)")
        jobs.note(session, job, {"status": "succeeded", "outcome": job.outcome, "summary": summary,
                                 "data": skipped})
    else:
        # Registration commits with the succeeded mark, so a job still running has registered nothing yet: a job
        # re-run after a crash registers exactly one challenger.
        version = register_challenger(session, store, job, plan, built)
        job.challenger_version, job.challenger_version_id = version.version, version.id
        decision = built.decision
        job.data, job.comparison = built.sources, {"decision": decision, "scores": built.scores}
        if decision["wins"]:
            proposal = propose_canary(session, job, version, plan, decision)
            job.outcome, job.proposal_id = JobOutcome.PROPOSED.value, proposal.id
        else:
            job.outcome = JobOutcome.NOT_BETTER.value
        summary = (f"challenger v{job.challenger_version}: accuracy on the cohort's held-out recent rows "
                   f"{decision['challenger_recent']} vs champion v{job.model_version} {decision['champion_recent']} "
                   f"(gain {decision['gain_recent']}, margin {decision['margin']}); reference test split "
                   f"{decision['challenger_reference']} vs {decision['champion_reference']}; int8 vs fp32 "
                   f"{decision['challenger_int8_delta_vs_fp32']}; "
                   + (f"canary proposed for approval ({job.proposal_id})" if decision["wins"]
                      else f"not proposed: {decision['reason']}"))
        jobs.note(session, job, {"status": "succeeded", "outcome": job.outcome, "summary": summary,
                                 "challenger_version": job.challenger_version, "proposal_id": job.proposal_id,
                                 "decision": {k: v for k, v in decision.items() if k != "latency_p50_us"},
                                 "latency_p50_us": decision["latency_p50_us"], "timings": timings})
    now = utcnow()
    job.timings, job.state, job.finished_at, job.updated_at = timings, JobState.SUCCEEDED.value, now, now
    jobs.set_request_state(session, job, "trained")
    session.flush()
    audit.record(session, actor=jobs.WORKER_ACTOR, action="training_job.succeeded",
                 resource=("training_job", job.id),
                 data={"outcome": job.outcome, "challenger_version": job.challenger_version,
                       "proposal_id": job.proposal_id, "timings": timings,
                       "decision": job.comparison.get("decision", {}).get("reason") or job.data.get("reason")})

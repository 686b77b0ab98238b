"""One retraining job on the demo-size model (256x256 MLP, digits + drifted labelled rows) vs the build-demo pipeline.

Peer: the registry's build-demo pipeline (train, convert, quantise, evaluate, register) on the registered digits
data in the same run and process: what training the model from scratch costs. The job does more (more rows,
four models scored on two sets, lineage, a proposal), so the target is a bound, not a race.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAME = "retrain_job"
WINDOWS, ROWS_PER_WINDOW = 20, 50
MAX_RATIO = 3.0


def main() -> int:
    """Register the demo champion (peer timing), post drifted labelled rows, run one job, write the results."""
    import numpy as np
    from sklearn.datasets import load_digits

    from control_plane.db.base import utcnow
    from control_plane.db.migrate import upgrade
    from control_plane.db.session import Database
    from control_plane.registry import pipeline
    from control_plane.registry.store import ArtifactStore
    from control_plane.settings import Settings
    from control_plane.telemetry.models import TelemetryWindowRow
    from control_plane.training import jobs
    from control_plane.training.runner import run_claimed
    from control_plane.training.schemas import RowsCreate
    from control_plane.training.service import post_rows

    load_start = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-retrain-"))
    settings = Settings(data_dir=work, database_url=f"sqlite:///{work / 'edgeloop.db'}")
    upgrade(settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)

    started = time.perf_counter()
    data = pipeline.load_sklearn_dataset("digits")
    with database.transaction() as session:
        pipeline.register_quantized_model(
            session=session, store=store, actor="admin:bench", model_name="digits-mlp", data=data,
            estimator=pipeline.train_mlp(data), params={"hidden": [256, 256], "dataset": "digits",
                                                        "quantization": "dynamic"})
    peer_s = time.perf_counter() - started

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    now = time.time()
    keys = [(f"demo-{30 + i % 10}", 5000 + i) for i in range(WINDOWS)]
    with database.transaction() as session:
        session.add_all([TelemetryWindowRow(
            device_id=d, window_seq=s, model_name="digits-mlp", model_version=1, baseline_id="b" * 16,
            window_start=now - 600 + i, window_end=now - 599 + i, received_at=now, device_group="demo-b", n=50,
            calls=50, errors=0, dropped_windows=0, sketch="[[],[]]") for i, (d, s) in enumerate(keys)])
        # The demo's drift on group demo-b (control_plane.demo_loop): lower contrast, raised black level.
        post_rows(session=session, actor="operator:bench", request=RowsCreate.model_validate({"windows": [
            {"device_id": d, "window_seq": s,
             "features": np.clip(x[i * ROWS_PER_WINDOW:(i + 1) * ROWS_PER_WINDOW] * 0.5 + 6.0, 0, 16).tolist(),
             "labels": [int(v) for v in y[i * ROWS_PER_WINDOW:(i + 1) * ROWS_PER_WINDOW]]}
            for i, (d, s) in enumerate(keys)]}))
        job = jobs.enqueue(session, model_name="digits-mlp", model_version=1, window_start=utcnow()
                           - timedelta(hours=1), window_end=utcnow() + timedelta(minutes=1),
                           cohort={"device_group": "demo-b"}, actor="admin:bench")
        job_id = job.id
    claim = jobs.claim_next(database, worker_id="bench", lease_seconds=900, max_attempts=1)
    assert claim is not None
    started = time.perf_counter()
    state = run_claimed(database, store, settings, claim)
    job_s = time.perf_counter() - started
    with database.transaction(write=False) as session:
        done = jobs.get_job(session=session, job_id=job_id)
        timings, decision, outcome, error = done.timings, done.comparison.get("decision", {}), done.outcome, done.error
    database.dispose()
    if state != "succeeded":
        print(f"job {state}: {error}")
        return 1
    ratio = job_s / peer_s
    checks = [
        {"name": "retraining job end to end (plan, train, quantise, compare, register, propose) / build-demo "
                 "pipeline", "target": f"<= {MAX_RATIO}x", "measured": round(job_s, 2), "peer": round(peer_s, 2),
         "unit": "s", "ratio": round(ratio, 3), "pass": ratio <= MAX_RATIO},
        {"name": "challenger int8 accuracy on the drifted cohort's held-out rows (peer: champion)",
         "target": f">= champion + {settings.training_win_margin}", "measured": decision["challenger_recent"],
         "peer": decision["champion_recent"], "unit": "", "ratio": None, "pass": bool(decision["wins"])},
    ]
    result = {
        "name": NAME, "title": "continuous training: one retraining job on the demo model",
        "target": f"job <= {MAX_RATIO}x the build-demo pipeline; the challenger wins on the drifted cohort",
        "measured": round(job_s, 2), "peer": round(peer_s, 2), "ratio": round(ratio, 3),
        "ratio_note": "job seconds / build-demo pipeline seconds", "pass": all(c["pass"] for c in checks),
        "checks": checks, "config": {"model": "MLP 256x256 (scikit-learn), dynamic int8", "database": "sqlite",
                                     "labelled_rows": WINDOWS * ROWS_PER_WINDOW, "windows": WINDOWS},
        "details": {"timings": timings, "decision": decision, "outcome": outcome},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_start": load_start,
                 "load_avg_end": list(os.getloadavg())},
    }
    (ROOT / "benchmarks" / "results" / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"checks": checks, "timings": timings, "host": result["host"]}, indent=1))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

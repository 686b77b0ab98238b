"""Cost of an A/B test report at fleet scale, against the floor of reading the same rows, same run.

- Edgeloop: `control_plane.fleet.abtest.report` for a two-arm test over 1,000 devices with 20 labelled telemetry
  windows each (20,000 windows with sketches, 20,000 label rows): per-arm labelled outcomes up to the horizon,
  Wilson / Newcombe intervals, the z-test, predicted class counts merged from the sketches and their chi-square
  test. This is what every GET /experiments/{id} and every evaluator run computes.
- Floor (peer): the two SELECTs alone (label rows joined to the arm assignments; window sketches joined likewise),
  fetched into Python and nothing else: what any implementation must read.
Both best of 3, SQLite with the control plane's engine settings; the setup registers two real digits MLPs
(pipeline) and starts the test through fleet.service.create_deployment (signed manifests for every device).
Usage: python benchmarks/abtest_report.py [--devices 1000] [--windows 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from control_plane.db.base import utcnow  # noqa: E402
from control_plane.db.migrate import upgrade  # noqa: E402
from control_plane.db.session import Database  # noqa: E402
from control_plane.fleet import abtest  # noqa: E402
from control_plane.fleet import service as fleet  # noqa: E402
from control_plane.fleet.abtest_models import ExperimentAssignment  # noqa: E402
from control_plane.fleet.manifests import ManifestFactory  # noqa: E402
from control_plane.fleet.models import Device  # noqa: E402
from control_plane.fleet.schemas import DeploymentCreate  # noqa: E402
from control_plane.registry import pipeline  # noqa: E402
from control_plane.registry.models import Dataset  # noqa: E402
from control_plane.registry.store import ArtifactStore  # noqa: E402
from control_plane.settings import Settings  # noqa: E402
from control_plane.telemetry.lookup import BaselineCache  # noqa: E402
from control_plane.telemetry.models import GroundTruthLabel, TelemetryWindowRow  # noqa: E402

NAME = "abtest_report"
TARGET_S = 2.0  # one report over 20,000 labelled windows
TARGET_RATIO = 5.0  # at most this many times the cost of just reading the rows


def best(func: Any, repeats: int = 3) -> tuple[float, Any]:
    """Return (fastest wall seconds, last result)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return min(times), result


def setup(tmp: Path, devices: int, windows: int) -> tuple[Database, str]:
    """Register two versions, add devices, start the A/B test, store windows with sketches and their labels."""
    url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp / "data", database_url=url, audit_checkpoint_seconds=3600)
    database = Database(url)
    data = pipeline.load_sklearn_dataset("digits")
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    with database.transaction() as session:
        for hidden in ((2,), (8,)):
            pipeline.register_quantized_model(session=session, store=store, actor="bench", model_name="digits",
                                              data=data, estimator=pipeline.train_mlp(data, hidden=hidden),
                                              params={"hidden": list(hidden)})
        session.execute(insert(Device), [{"id": f"dev-{i:05d}", "name": "", "group_name": "bench", "labels": {},
                                          "sequence": 0, "online": False, "created_by": "bench",
                                          "created_at": utcnow()} for i in range(devices)])
    factory = ManifestFactory.from_settings(settings)
    with database.transaction() as session:
        rollout = fleet.create_deployment(session=session, factory=factory, actor="bench", request=DeploymentCreate.
                                          model_validate({"model": "digits", "selector": {"group": "bench"},
                                                          "strategy": {"kind": "ab", "ab": {
                                                              "arms": [{"version": 1, "weight": 0.5},
                                                                       {"version": 2, "weight": 0.5}],
                                                              "mde": 0.05, "baseline_rate": 0.6,
                                                              "expected_samples_per_device": windows * 20}}}))
        experiment = abtest.get_experiment(session=session, experiment_id=rollout.id)
        arms = dict(session.execute(select(ExperimentAssignment.device_id, ExperimentAssignment.arm)
                                    .where(ExperimentAssignment.experiment_id == experiment.id)).all())
        baseline = session.scalar(select(Dataset.baseline).where(Dataset.baseline.is_not(None)))
        layout = BaselineCache().get(session, baseline["baseline_id"])
        assert layout is not None
    rng = np.random.default_rng(0)
    output = layout.field("output")
    classes = output.stop - output.start
    start = time.time()
    rows, labels = [], []
    for device, arm in arms.items():
        accuracy = 0.6 if arm == 0 else 0.66
        for seq in range(windows):
            counts = rng.multinomial(20, np.full(classes, 1 / classes))
            nonzero = np.flatnonzero(counts)
            sketch = json.dumps([[*(output.start + nonzero).tolist(), layout.offsets["n"]],
                                 [*counts[nonzero].tolist(), 20]], separators=(",", ":"))
            rows.append({"device_id": device, "window_seq": seq, "model_name": "digits", "model_version": arm + 1,
                         "baseline_id": layout.baseline.baseline_id, "window_start": start + seq,
                         "window_end": start + seq + 60, "received_at": start, "n": 20, "calls": 1, "errors": 0,
                         "dropped_windows": 0, "sketch": sketch})
            correct = int(rng.binomial(20, accuracy))
            labels.append({"device_id": device, "window_seq": seq, "model_name": "digits", "model_version": arm + 1,
                           "window_start": start + seq, "total": 20, "correct": correct,
                           "confusion": json.dumps([[1, 1, correct], [1, 2, 20 - correct]]), "received_at": start})
    with database.transaction() as session:
        for chunk in range(0, len(rows), 5000):
            session.execute(insert(TelemetryWindowRow), rows[chunk:chunk + 5000])
            session.execute(insert(GroundTruthLabel), labels[chunk:chunk + 5000])
    return database, experiment.id


def floor(database: Database, experiment_id: str) -> int:
    """Read the rows a report needs, and nothing else."""
    label, window, member = GroundTruthLabel, TelemetryWindowRow, ExperimentAssignment
    with database.transaction(write=False) as session:
        labelled = session.execute(
            select(member.arm, label.total, label.correct)
            .join(member, (member.device_id == label.device_id) & (member.experiment_id == experiment_id))
            .where(label.model_version == member.version).order_by(label.window_start)).all()
        sketches = session.execute(
            select(member.arm, window.baseline_id, window.sketch)
            .join(member, (member.device_id == window.device_id) & (member.experiment_id == experiment_id))
            .where(window.model_version == member.version)).all()
    return len(labelled) + len(sketches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100 devices")
    args = parser.parse_args()
    devices = 100 if args.quick else args.devices
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="abtest-bench-") as tmp:
        started = time.perf_counter()
        database, experiment_id = setup(Path(tmp), devices, args.windows)
        setup_s = time.perf_counter() - started
        baselines = BaselineCache()

        def report() -> Any:
            with database.transaction(write=False) as session:
                return abtest.report(session, abtest.get_experiment(session=session, experiment_id=experiment_id),
                                     baselines)

        report()  # warm the baseline cache, as a serving process has it
        report_s, read = best(report)
        floor_s, fetched = best(lambda: floor(database, experiment_id))
        database.dispose()
    ratio = report_s / floor_s
    windows = devices * args.windows
    checks = [
        {"name": f"report over {windows:,} labelled windows", "target": f"<= {TARGET_S} s",
         "measured": round(report_s, 3), "peer": round(floor_s, 3), "unit": "s", "ratio": round(ratio, 2),
         "pass": report_s <= TARGET_S},
        {"name": "report / reading the same rows", "target": f"<= {TARGET_RATIO}x", "measured": round(ratio, 2),
         "peer": 1.0, "unit": "x", "ratio": round(ratio, 2), "pass": ratio <= TARGET_RATIO},
    ]
    result = {
        "name": NAME, "title": "A/B test report at fleet scale",
        "target": f"report <= {TARGET_S} s for {windows:,} labelled windows and <= {TARGET_RATIO}x reading its rows",
        "measured": round(report_s, 3), "peer": round(floor_s, 3), "ratio": round(ratio, 2),
        "ratio_note": "report seconds / seconds to SELECT and fetch the same label and sketch rows",
        "unit": "s", "pass": all(c["pass"] for c in checks), "checks": checks,
        "config": {"devices": devices, "windows_per_device": args.windows, "database": "sqlite",
                   "rows_fetched_by_floor": fetched, "setup_s": round(setup_s, 1), "python": platform.python_version()},
        "details": {"arms": [{"version": a.version, "n": a.n, "n_total": a.n_total, "rate": a.rate}
                             for a in read.arms], "required_per_arm": read.required_per_arm,
                    "p_value": read.comparisons[0].p_value, "winner": read.winner},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(load_start[0], 2),
                 "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
    }
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    for check in checks:
        print(f"{check['name']}: {check['measured']} {check['unit']} (floor {check['peer']}), target "
              f"{check['target']}: {'pass' if check['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()

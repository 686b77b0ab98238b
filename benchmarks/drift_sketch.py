"""Sketch-mode drift: merge 10,000 telemetry windows x 50 features and test them, vs exact raw-data tests.

Windows are produced by the real edge WindowRecorder, JSON-encoded, then validated by parse_window (the
ingest step, timed separately). The timed step is what a monitor does per evaluation: merge the stored
windows and run every test. The peer is recomputing the same verdicts from the raw rows (exact mode).

    .venv/bin/python benchmarks/drift_sketch.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane.drift.baseline import build_baseline
from control_plane.drift.selection import DriftConfig, detect_drift
from control_plane.drift.sketch import SketchLayout, detect_drift_sketch, merge_vectors, merge_windows, parse_window
from edge_agent.telemetry import WindowRecorder

ROOT = Path(__file__).resolve().parent


class ListSink:
    """Keep encoded windows in memory."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.seq = 0

    def next_window_seq(self) -> int:
        self.seq += 1
        return self.seq

    def take_dropped(self) -> int:
        return 0

    def put(self, message: dict[str, Any]) -> None:
        self.payloads.append(json.dumps(message, separators=(",", ":")).encode())


def best(func: Any, repeats: int) -> tuple[float, Any]:
    """Return the best wall time of `repeats` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--rows-per-window", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n_features = args.features
    reference = rng.normal(size=(200_000, n_features))
    baseline = build_baseline(reference, labels=(reference[:, 0] > 0).astype(int))
    layout = SketchLayout.from_baseline(baseline)
    current = rng.normal(size=(args.windows * args.rows_per_window, n_features))
    current[:, ::10] += 0.5  # every 10th feature drifts (PSI about 0.25)

    sink, clock = ListSink(), [0.0]
    recorder = WindowRecorder(
        baseline.to_dict(), device_id="dev-1", model_name="m", model_version=1, sink=sink, clock=lambda: clock[0]
    )
    start = time.perf_counter()
    for w in range(args.windows):
        rows = current[w * args.rows_per_window : (w + 1) * args.rows_per_window]
        recorder.observe(rows, (rows[:, 0] > 0).astype(int), None, 0.002, error=False)
        clock[0] += 60
    recorder.close_window()
    record_seconds = time.perf_counter() - start
    payload_bytes = [len(p) for p in sink.payloads]

    start = time.perf_counter()
    windows = [parse_window(json.loads(p), layout) for p in sink.payloads]
    ingest_seconds = time.perf_counter() - start
    matrix = np.stack([w.vector for w in windows])

    config = DriftConfig()
    merge_test_seconds, report = best(lambda: detect_drift_sketch(merge_windows(layout, windows), config), 5)
    matrix_seconds, _ = best(lambda: detect_drift_sketch(merge_vectors(layout, matrix), config), 5)
    merge_only_seconds, _ = best(lambda: merge_windows(layout, windows), 5)
    exact_seconds, exact = best(lambda: detect_drift(reference, current, config=config), 1)

    sketch_by_name = report.by_name()
    ks_gap = [abs((sketch_by_name[f.feature].ks or 0.0) - (f.ks or 0.0)) for f in exact.features]
    inside = sum(
        (sketch_by_name[f.feature].ks or 0) - 1e-12 <= (f.ks or 0) <= (sketch_by_name[f.feature].ks_upper or 0) + 1e-12
        for f in exact.features
    )
    psi_gap = max(abs(sketch_by_name[f.feature].psi - f.psi) for f in exact.features)
    agree = sum(sketch_by_name[f.feature].drifted == f.drifted for f in exact.features)
    results = {
        "benchmark": "drift_sketch",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "load_average": os.getloadavg(),
        "windows": args.windows,
        "features": n_features,
        "rows_per_window": args.rows_per_window,
        "vector_length": layout.length,
        "message_bytes_mean": float(np.mean(payload_bytes)),
        "message_bytes_max": int(np.max(payload_bytes)),
        "record_seconds_total": record_seconds,
        "ingest_parse_validate_seconds_total": ingest_seconds,
        "ingest_per_window_us": ingest_seconds / args.windows * 1e6,
        "merge_only_seconds": merge_only_seconds,
        "merge_and_test_seconds": merge_test_seconds,
        "merge_matrix_and_test_seconds": matrix_seconds,
        "exact_raw_seconds": exact_seconds,
        "ratio_exact_over_sketch": exact_seconds / merge_test_seconds,
        "sketch_vs_exact": {
            "ks_max_abs_gap": float(max(ks_gap)),
            "exact_ks_inside_sketch_bounds": int(inside),
            "psi_max_abs_gap": float(psi_gap),
            "drift_verdicts_agree": int(agree),
            "sketch_drifted_inputs": sum(f.drifted for f in report.features if f.feature != "__output__"),
            "sketch_output_drifted": sketch_by_name["__output__"].drifted,
            "exact_drifted": exact.n_drifted,
        },
    }
    print(f"Sketch-mode drift: {args.windows:,} windows x {n_features} features ({args.rows_per_window} rows each)")
    print(f"{'step':<44} | {'seconds':>9}")
    for label, value in (
        ("merge windows (in-place adds)", merge_only_seconds),
        ("merge windows + all tests (target <= 1 s)", merge_test_seconds),
        ("sum (N, L) matrix + all tests", matrix_seconds),
        ("exact tests on the raw rows (peer)", exact_seconds),
    ):
        print(f"{label:<44} | {value:>9.3f}")
    print(f"ratio exact / sketch: {exact_seconds / merge_test_seconds:.1f}x")
    print(
        f"ingest parse+validate: {results['ingest_per_window_us']:.0f} us/window; "
        f"message mean {results['message_bytes_mean']:.0f} B, max {results['message_bytes_max']} B"
    )
    print("sketch vs exact:", json.dumps(results["sketch_vs_exact"]))
    results.update({
        "name": "drift_sketch", "target": "merge 10,000 windows x 50 features and test them in <= 1 s",
        "measured": round(merge_test_seconds, 4), "peer": round(exact_seconds, 3), "unit": "s",
        "ratio": round(exact_seconds / merge_test_seconds, 1),
        "ratio_note": "exact tests on the raw rows / sketch merge + tests", "pass": merge_test_seconds <= 1.0,
        "config": {"windows": args.windows, "features": n_features, "rows_per_window": args.rows_per_window,
                   "peer": "control_plane.drift.stats exact mode on the same raw rows"},
    })
    out = ROOT / "results" / "drift_sketch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT.parent)}")


if __name__ == "__main__":
    main()

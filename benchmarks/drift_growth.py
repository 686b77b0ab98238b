"""Drift time vs rows and vs features: Edgeloop's exact drift (KS + PSI + chi2 + JS, BH) vs a scipy ks_2samp loop.

Same float64 arrays for both sides (benchmarks/drift_exact.make_data: four distributions, ties, every 10th feature
drifted), same process, alternating per cell so background load hits both alike. The peer is the textbook
reference: ``scipy.stats.ks_2samp(ref[:, j], cur[:, j], method="auto")`` for every feature (exact p-values up to
10,000 rows, as Edgeloop's KS_EXACT_MAX_N), single-threaded
(it computes one test per feature; Edgeloop computes four and the multiple-testing correction). Edgeloop is timed
on one thread (the fair comparison) and on ``default_workers()`` threads (what the control plane uses).
Evidently is the peer of benchmarks/drift_exact.py (own venv); it is not re-run here.

    python benchmarks/drift_growth.py            # rows 10k..300k at 100 features, features 10..200 at 100k rows
    python benchmarks/drift_growth.py --quick    # rows 2k..30k at 50 features, features 10..50 at 10k rows
    python benchmarks/drift_growth.py --full     # adds 1M rows (the peer alone takes ~1 min there)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._growth import host, plot, write_results
from benchmarks.drift_exact import make_data, time_ours
from control_plane.drift.stats import KS_EXACT_MAX_N, default_workers

NAME = "drift_growth"
SLOPE_TARGET = 1.2  # n log n sorting over 10x-30x ranges fits a log-log slope of ~1.05-1.1


def time_peer(ref: np.ndarray, cur: np.ndarray, repeats: int) -> dict[str, float]:
    """Best wall time and smallest CPU time of a scipy ks_2samp loop over every feature."""
    best, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for j in range(ref.shape[1]):
            ks_2samp(ref[:, j], cur[:, j], method="auto")  # the same exact/asymptotic switch as Edgeloop
        best, cpu = min(best, time.perf_counter() - start), min(cpu, time.process_time() - cpu_start)
    return {"seconds_best": best, "cpu_seconds": cpu}


def slope(xs: list[int], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x): 1.0 = linear growth."""
    if len(xs) < 2:
        return None
    return float(np.polyfit([math.log(x) for x in xs], [math.log(y) for y in ys], 1)[0])


def run_cell(rows: int, features: int, threads: int) -> dict[str, Any]:
    """Time both sides on one (rows, features) cell."""
    ref, cur = make_data(rows, features, seed=rows + features)
    repeats = 3 if rows * features <= 10_000_000 else 1
    single = time_ours(ref, cur, repeats, 1)
    peer = time_peer(ref, cur, repeats)
    multi = time_ours(ref, cur, repeats, threads)
    # CPU time of the single-threaded sides is the headline: on shared, loaded cores it moves far less than
    # wall time, and both sides run on one thread. Wall times are kept next to it.
    cell = {"rows": rows, "features": features, "edgeloop_1_thread_cpu_s": round(single["cpu_seconds"], 4),
            "scipy_ks_loop_cpu_s": round(peer["cpu_seconds"], 4),
            "edgeloop_1_thread_wall_s": round(single["seconds_best"], 4),
            "scipy_ks_loop_wall_s": round(peer["seconds_best"], 4),
            f"edgeloop_{threads}_threads_wall_s": round(multi["seconds_best"], 4),
            "speedup_1_thread_cpu": round(peer["cpu_seconds"] / single["cpu_seconds"], 2),
            "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(f"rows={rows:>9,} features={features:>3}  edgeloop 1t cpu {single['cpu_seconds']:.3f}s  "
          f"{threads}t wall {multi['seconds_best']:.3f}s  scipy ks loop cpu {peer['cpu_seconds']:.3f}s", flush=True)
    return cell


def make_checks(by_rows: list[dict[str, Any]], by_features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the table rows: growth slope per axis and the largest cell against the peer.

    The row slope is fitted above KS_EXACT_MAX_N rows only: at or below it both sides compute exact KS p-values
    (a different, dearer algorithm), which would bend the fit; that cell stays in the JSON and the plot.
    """
    checks = []
    row_features, feature_rows = by_rows[0]["features"], by_features[0]["rows"]
    fitted_rows = [c for c in by_rows if c["rows"] > KS_EXACT_MAX_N]
    for axis, cells, key, fixed in (("rows", fitted_rows, "rows", f"{row_features} features, asymptotic KS"),
                                    ("features", by_features, "features", f"{feature_rows:,} rows")):
        xs = [c[key] for c in cells]
        ours_slope = slope(xs, [c["edgeloop_1_thread_cpu_s"] for c in cells])
        peer_slope = slope(xs, [c["scipy_ks_loop_cpu_s"] for c in cells])
        checks.append({"name": f"drift time growth in {axis} ({xs[0]:,}..{xs[-1]:,}, {fixed}): log-log slope, "
                               "1 thread CPU (peer: scipy ks_2samp loop)",
                       "target": f"<= {SLOPE_TARGET} (near-linear)", "measured": round(ours_slope or 0, 3),
                       "peer": round(peer_slope or 0, 3), "unit": "",
                       "ratio": round(ours_slope / peer_slope, 3) if ours_slope and peer_slope else None,
                       "pass": ours_slope is not None and ours_slope <= SLOPE_TARGET})
        largest = cells[-1]
        checks.append({"name": f"drift at {largest['rows']:,} rows x {largest['features']} features, CPU s, 1 "
                               "thread (KS+PSI+chi2+JS) vs scipy ks_2samp loop (KS only)",
                       "target": "<= 0.2x the peer", "measured": largest["edgeloop_1_thread_cpu_s"],
                       "peer": largest["scipy_ks_loop_cpu_s"], "unit": "s",
                       "ratio": round(largest["edgeloop_1_thread_cpu_s"] / largest["scipy_ks_loop_cpu_s"], 3),
                       "pass": largest["edgeloop_1_thread_cpu_s"] <= 0.2 * largest["scipy_ks_loop_cpu_s"]})
    return checks


def main(argv: list[str] | None = None) -> int:
    """Run both growth axes, write results/drift_growth.json and .png."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (~20 s)")
    parser.add_argument("--full", action="store_true", help="add 1M rows to the row axis")
    parser.add_argument("--threads", type=int, default=default_workers())
    args = parser.parse_args(argv)
    if args.quick:
        rows_axis, row_features, features_axis, feature_rows = [2_000, 10_000, 30_000], 50, [10, 25, 50], 10_000
    else:
        rows_axis, row_features = [10_000, 30_000, 100_000, 300_000], 100
        features_axis, feature_rows = [10, 25, 50, 100, 200], 100_000
        if args.full:
            rows_axis.append(1_000_000)
    load_start = os.getloadavg()
    warm_ref, warm_cur = make_data(2_000, 10, seed=1)  # thread pool, imports and caches before the first timing
    time_ours(warm_ref, warm_cur, 1, args.threads)
    time_peer(warm_ref, warm_cur, 1)
    by_rows = [run_cell(rows, row_features, args.threads) for rows in rows_axis]
    by_features = [run_cell(feature_rows, features, args.threads) for features in features_axis]
    multi_key = f"edgeloop_{args.threads}_threads_wall_s"
    checks = make_checks(by_rows, by_features)
    ylabel = "seconds (1 thread: CPU; 2 threads: wall)"

    def series(cells: list[dict[str, Any]], xs: list[int]) -> dict[str, tuple[list[int], list[Any]]]:
        return {"Edgeloop, 1 thread (CPU s)": (xs, [c["edgeloop_1_thread_cpu_s"] for c in cells]),
                f"Edgeloop, {args.threads} threads (wall s)": (xs, [c[multi_key] for c in cells]),
                "peer: scipy ks_2samp loop (CPU s)": (xs, [c["scipy_ks_loop_cpu_s"] for c in cells])}

    panels = [
        {"xlabel": f"rows per side (reference = current), {row_features} features", "ylabel": ylabel,
         "logx": True, "logy": True, "subtitle": "time vs rows", "series": series(by_rows, rows_axis)},
        {"xlabel": f"features, {feature_rows:,} rows per side", "ylabel": ylabel, "logx": True, "logy": True,
         "subtitle": "time vs features", "series": series(by_features, features_axis)},
    ]
    png = plot(NAME, panels, "Exact drift (KS+PSI+chi2+JS, BH) vs scipy ks_2samp per feature, same run",
               quick=args.quick)
    path = write_results(NAME, {
        "title": "Drift time vs rows and features (Edgeloop exact drift vs scipy ks_2samp loop, same run)",
        "target": f"near-linear growth (log-log slope <= {SLOPE_TARGET}) on both axes; <= 0.2x the peer's time",
        "measured": checks[1]["measured"], "peer": checks[1]["peer"], "unit": "s", "ratio": checks[1]["ratio"],
        "ratio_note": "Edgeloop 1-thread CPU seconds / scipy ks_2samp loop CPU seconds at the largest row cell",
        "pass": all(c["pass"] for c in checks), "checks": checks, "plot": png.name,
        "config": {"edgeloop": "control_plane.drift.selection.detect_drift: exact KS on raw values, PSI/chi2/JS "
                               "on reference deciles, Benjamini-Hochberg; best of 3 (1 at >= 10M cells)",
                   "peer": "scipy.stats.ks_2samp(method='auto') per feature, single-threaded, same arrays, "
                           "same process, best of 3 (1 at >= 10M cells)",
                   "threads": args.threads, "quick": args.quick, "full": args.full,
                   "data": "benchmarks/drift_exact.make_data (normal/lognormal/uniform/gamma, every 7th feature "
                           "rounded to 0.1, every 10th drifted)"},
        "details": {"by_rows": by_rows, "by_features": by_features},
        "host": host(load_start),
    }, quick=args.quick)
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

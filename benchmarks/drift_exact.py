"""Exact drift on raw samples: Edgeloop's vectorised PSI + KS + chi-squared vs Evidently's DataDriftPreset.

Both sides get the same float64 arrays (saved to .npy; Evidently runs in its own venv in a subprocess).
Evidently is timed around `Report.run` only (its import and the .npy load are excluded); it runs
single-threaded as shipped (its CPU time is about its wall time, both reported). Edgeloop is timed with one
thread and with `--threads` (default: control_plane.drift.stats.default_workers()), wall and CPU.

    .venv/bin/python benchmarks/drift_exact.py            # full run (~6 min on an idle machine)
    .venv/bin/python benchmarks/drift_exact.py --quick    # small sizes, no 1M run
    .venv/bin/python benchmarks/drift_exact.py --evidently-rows 100000 --evidently-features ''   # smaller peer grid
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane.drift.selection import detect_drift
from control_plane.drift.stats import default_workers, ks_pvalue, raw_numeric_stats

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "drift_exact"
EVIDENTLY_PYTHON = ROOT / ".venvs" / "evidently" / "bin" / "python"

EVIDENTLY_RUNNER = r"""
import json, sys, time
import numpy as np, pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
ref_path, cur_path, method = sys.argv[1:4]
ref, cur = np.load(ref_path), np.load(cur_path)
cols = [f"f{i}" for i in range(ref.shape[1])]
definition = DataDefinition(numerical_columns=cols)
ref_df, cur_df = pd.DataFrame(ref, columns=cols), pd.DataFrame(cur, columns=cols)
start, cpu = time.perf_counter(), time.process_time()
snapshot = Report([DataDriftPreset(method=method)]).run(
    Dataset.from_pandas(cur_df, data_definition=definition), Dataset.from_pandas(ref_df, data_definition=definition)
)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
values = {}
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config.get("type", "").endswith("ValueDrift"):
        values[config["column"]] = metric["value"]
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "values": values}))
"""


def make_data(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (reference, current) float64 matrices; every 10th feature drifts, every 7th has heavy ties."""
    rng = np.random.default_rng(seed)
    ref = np.empty((rows, features))
    cur = np.empty((rows, features))
    for j in range(features):
        kind = j % 4
        if kind == 0:
            ref[:, j], cur[:, j] = rng.normal(size=rows), rng.normal(size=rows)
        elif kind == 1:
            ref[:, j], cur[:, j] = rng.lognormal(size=rows), rng.lognormal(size=rows)
        elif kind == 2:
            ref[:, j], cur[:, j] = rng.uniform(-3, 3, rows), rng.uniform(-3, 3, rows)
        else:
            ref[:, j], cur[:, j] = rng.gamma(2.0, size=rows), rng.gamma(2.0, size=rows)
        if j % 7 == 0:
            ref[:, j], cur[:, j] = np.round(ref[:, j], 1), np.round(cur[:, j], 1)
        if j % 10 == 0:
            cur[:, j] = cur[:, j] * 1.1 + 0.2
    return ref, cur


def time_ours(ref: np.ndarray, cur: np.ndarray, repeats: int, workers: int) -> dict[str, float]:
    """Time detect_drift (KS on raw values + PSI, chi-squared and JS on deciles, BH-corrected) on `workers` threads.

    Returns the best and median wall time and the smallest CPU time (all threads; the machine is shared).
    """
    times, cpu = [], float("inf")
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        detect_drift(ref, cur, workers=workers)
        times.append(time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - cpu_start)
    return {"seconds_best": min(times), "seconds_median": statistics.median(times), "cpu_seconds": cpu}


def run_evidently(ref: np.ndarray, cur: np.ndarray, method: str) -> dict[str, Any]:
    """Run Evidently on the same arrays in its venv; return its timing and per-column values."""
    WORK.mkdir(parents=True, exist_ok=True)
    ref_path, cur_path = WORK / "ref.npy", WORK / "cur.npy"
    np.save(ref_path, ref)
    np.save(cur_path, cur)
    out = subprocess.run(
        [str(EVIDENTLY_PYTHON), "-c", EVIDENTLY_RUNNER, str(ref_path), str(cur_path), method],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def evidently_psi_reference(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """PSI with Evidently's own binning (Sturges equal-width bins over the pooled range, its zero fill)."""
    result = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        r, c = ref[:, j], cur[:, j]
        if np.unique(r).size <= 20:
            keys = np.union1d(r, c)
            p = np.array([np.sum(r == k) for k in keys]) / r.size
            q = np.array([np.sum(c == k) for k in keys]) / c.size
        else:
            edges = np.histogram_bin_edges(np.concatenate([r, c]), bins="sturges")
            p = np.histogram(r, edges)[0] / r.size
            q = np.histogram(c, edges)[0] / c.size
        for arr in (p, q):
            smallest = arr[arr > 0].min()
            arr[arr == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
        result[j] = np.sum((p - q) * np.log(p / q))
    return result


def agreement(ref: np.ndarray, cur: np.ndarray, ev_psi: dict[str, float], ev_ks: dict[str, float]) -> dict[str, Any]:
    """Compare numbers where the definitions match (KS p-value; PSI formula on Evidently's bins)."""
    names = [f"f{j}" for j in range(ref.shape[1])]
    raw = raw_numeric_stats(ref, cur)
    ours_ks_p = ks_pvalue(raw.ks, raw.n_ref, raw.n_cur)
    theirs_ks_p = np.array([ev_ks[n] for n in names])
    theirs_psi = np.array([ev_psi[n] for n in names])
    same_bins_psi = evidently_psi_reference(ref, cur)
    ours_default = np.array([f.psi for f in detect_drift(ref, cur).features])
    return {
        "ks_pvalue_max_abs_diff": float(np.max(np.abs(ours_ks_p - theirs_ks_p))),
        "ks_pvalue_max_rel_diff_where_p_gt_1e-12": float(
            np.max(np.abs(ours_ks_p - theirs_ks_p)[theirs_ks_p > 1e-12] / theirs_ks_p[theirs_ks_p > 1e-12], initial=0)
        ),
        # With scipy's own asymptotic formula (what ks_2samp "auto" uses at these sizes) the p-values match.
        "ks_pvalue_scipy_asymp_max_abs_diff": float(
            np.max(np.abs(ks_pvalue(raw.ks, raw.n_ref, raw.n_cur, method="asymp") - theirs_ks_p))
        ),
        "ks_decisions_agree": int(np.sum((ours_ks_p <= 0.05) == (theirs_ks_p <= 0.05))),
        "psi_same_bins_max_abs_diff": float(np.max(np.abs(same_bins_psi - theirs_psi))),
        "psi_deciles_vs_evidently_max_abs_diff": float(np.max(np.abs(ours_default - theirs_psi))),
        "psi_decisions_agree_at_0.1": int(np.sum((ours_default >= 0.1) == (theirs_psi >= 0.1))),
        "features": len(names),
    }


def convention(results: dict[str, Any]) -> dict[str, Any]:
    """Summarise for benchmarks/README.md (see its results convention)."""
    ours = {(e["rows"], e["features"]): e for e in results["ours"]}
    threads = results["config"]["edgeloop_threads"]
    checks: list[dict[str, Any]] = []
    if (1_000_000, 100) in ours:
        best = ours[(1_000_000, 100)]["threads"]["seconds_best"]
        checks.append({"name": f"exact PSI+KS+chi2, 100 features, 1M vs 1M rows ({threads} threads)",
                       "target": "<= 5 s", "measured": round(best, 3), "peer": None, "unit": "s", "ratio": None,
                       "pass": best <= 5.0})
    for run in results["evidently"]:
        if (run["rows"], run["features"]) != (100_000, 100):
            continue
        mine = ours[(100_000, 100)]
        checks.append({"name": f"vs Evidently DataDriftPreset({run['method']}), 100,000 x 100 (speed-up, wall, "
                               f"Edgeloop {threads} threads vs Evidently 1)",
                       "target": ">= 100x", "measured": round(mine["threads"]["seconds_best"], 3),
                       "peer": round(run["seconds"], 2), "unit": "s", "ratio": round(run["ratio_wall"], 1),
                       "pass": run["ratio_wall"] >= 100, "ratio_single_thread_wall": round(run["ratio_wall_1"], 1),
                       "ratio_cpu": round(run["ratio_cpu"], 1)})
    return {"name": "drift_exact", "target": "1M x 100 in <= 5 s; >= 100x Evidently at 100k x 100",
            "measured": checks[0]["measured"] if checks else None, "peer": "Evidently 0.7.23 DataDriftPreset",
            "ratio": None, "ratio_note": "peer seconds / Edgeloop seconds",
            "pass": all(c["pass"] for c in checks) if checks else None, "checks": checks}


def parse_grid(text: str) -> list[int]:
    """Return the integers of a comma-separated list ('' is empty)."""
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes only, skip the 1M run")
    parser.add_argument("--threads", type=int, default=default_workers(), help="Edgeloop threads (also timed at 1)")
    parser.add_argument("--rows", default="10000,100000,300000,1000000", help="Edgeloop row grid at 100 features")
    parser.add_argument("--features", default="25,50,100", help="Edgeloop feature grid at 100k rows")
    parser.add_argument("--evidently-rows", default="10000,100000", help="rows at 100 features Evidently also runs")
    parser.add_argument("--evidently-features", default="25,50", help="features at 100k rows Evidently also runs")
    parser.add_argument("--evidently-methods", default="psi,ks")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--output", help="results file (default benchmarks/results/drift_exact[_quick].json)")
    args = parser.parse_args()
    grid_rows, grid_features = parse_grid(args.rows), parse_grid(args.features)
    ev_rows, ev_features = parse_grid(args.evidently_rows), parse_grid(args.evidently_features)
    if args.quick:
        grid_rows, grid_features, ev_rows, ev_features = [2_000, 10_000], [25, 100], [2_000, 10_000], [25]
    growth_rows = 10_000 if args.quick else 100_000
    methods = [] if args.skip_evidently else [m for m in args.evidently_methods.split(",") if m]
    # (rows, features) cells: the row grid at 100 features, then the feature grid at `growth_rows`.
    cells = [(rows, 100) for rows in grid_rows] + [(growth_rows, f) for f in grid_features if f != 100]
    results: dict[str, Any] = {
        "benchmark": "drift_exact",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "config": {"edgeloop": "control_plane.drift.selection.detect_drift (exact KS + decile PSI/chi2/JS, BH)",
                   "edgeloop_threads": args.threads,
                   "evidently": "0.7.23 in its own venv, Report([DataDriftPreset(method=...)]).run, same arrays; "
                                "single-threaded as shipped (CPU time ~ wall time, both recorded)",
                   "data": "float64, reference rows = current rows; normal/lognormal/uniform/gamma, every 7th "
                           "feature rounded to 0.1, every 10th drifted"},
        "load_average_at_start": os.getloadavg(),
        "ours": [],
        "evidently": [],
    }
    for rows, features in cells:
        ref, cur = make_data(rows, features, seed=rows + features)
        repeats = 5 if rows <= 100_000 else 2
        entry = {"rows": rows, "features": features, "single": time_ours(ref, cur, repeats, 1),
                 "threads": time_ours(ref, cur, repeats, args.threads), "load_average": os.getloadavg()[0]}
        results["ours"].append(entry)
        print(f"rows={rows:>9,} features={features:>3}  edgeloop 1 thread {entry['single']['seconds_best']:.3f}s "
              f"(cpu {entry['single']['cpu_seconds']:.3f}s), {args.threads} threads "
              f"{entry['threads']['seconds_best']:.3f}s (cpu {entry['threads']['cpu_seconds']:.3f}s)", flush=True)
        peer = (features == 100 and rows in ev_rows) or (rows == growth_rows and features in ev_features)
        ev = {method: run_evidently(ref, cur, method) for method in methods} if peer else {}
        for method, run in ev.items():
            results["evidently"].append({
                "rows": rows, "features": features, "method": method, "seconds": run["seconds"],
                "cpu_seconds": run["cpu_seconds"], "ratio_wall": run["seconds"] / entry["threads"]["seconds_best"],
                "ratio_wall_1": run["seconds"] / entry["single"]["seconds_best"],
                "ratio_cpu": run["cpu_seconds"] / entry["threads"]["cpu_seconds"], "load_average": os.getloadavg()[0]})
            print(f"    evidently {method}: {run['seconds']:.2f}s (cpu {run['cpu_seconds']:.2f}s)", flush=True)
        if (rows, features) == (100_000, 100) and {"psi", "ks"} <= ev.keys():
            results["agreement"] = agreement(ref, cur, ev["psi"]["values"], ev["ks"]["values"])
    results["load_average_at_end"] = os.getloadavg()
    print_tables(results, args.threads)
    results.update(convention(results))
    default = ROOT / "results" / ("drift_exact_quick.json" if args.quick else "drift_exact.json")
    out = Path(args.output) if args.output else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


def print_tables(results: dict[str, Any], threads: int) -> None:
    """Print the growth table (rows, then features) with Evidently's times and the ratios."""
    peers = {(r["rows"], r["features"], r["method"]): r for r in results["evidently"]}
    print(f"\nExact drift, reference rows = current rows; seconds (best run), CPU seconds in brackets. "
          f"Edgeloop on 1 and {threads} threads; Evidently single-threaded as shipped.")
    header = ["rows", "features", "edgeloop 1 thr", f"edgeloop {threads} thr", "evidently psi", "evidently ks",
              "ratio psi (wall, 1 thr / N thr)", "ratio ks"]
    print(" | ".join(header))
    for entry in results["ours"]:
        single, multi = entry["single"], entry["threads"]
        cells = [f"{entry['rows']:,}", str(entry["features"]),
                 f"{single['seconds_best']:.3f} ({single['cpu_seconds']:.3f})",
                 f"{multi['seconds_best']:.3f} ({multi['cpu_seconds']:.3f})"]
        ratios = []
        for method in ("psi", "ks"):
            run = peers.get((entry["rows"], entry["features"], method))
            cells.append(f"{run['seconds']:.2f} ({run['cpu_seconds']:.2f})" if run else "-")
            ratios.append(f"{run['ratio_wall_1']:.0f}x / {run['ratio_wall']:.0f}x" if run else "-")
        print(" | ".join(cells + ratios))
    if "agreement" in results:
        print("\nAgreement with Evidently:", json.dumps(results["agreement"], indent=1))


if __name__ == "__main__":
    main()

"""Rollout time vs fleet size (default 100, 1,000, 3,000 simulated devices), against raw broker fan-out per size.

Each size is benchmarks/fleet_rollout.measure on a fresh private mosquitto, a fresh control plane (`edgeloop
serve`, one uvicorn worker, SQLite WAL) and fresh simulated devices (edge_agent.simulator.Fleet, one epoll
thread): the peer is mosquitto's raw fan-out of one retained manifest of the real size to each of N subscribers,
measured in the same run just before the rollout; Edgeloop's time runs from POST /fleet/deployments until the
rollout is `succeeded` (every device downloaded, verified, self-tested, activated and reported back).

    python benchmarks/fleet_rollout_growth.py [--quick] [--sizes 100,1000,3000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._growth import host, plot, write_results
from benchmarks.fleet_rollout import TARGET_S, measure

NAME = "fleet_rollout_growth"
PER_DEVICE_TARGET_MS = TARGET_S * 1000 / 1000  # fleet_rollout's target: 1,000 devices in 30 s = 30 ms per device


def one_size(devices: int, workers: int, estimator_path: Path) -> dict[str, Any]:
    """Measure one fleet size (run in a child process, so a hang costs one point, not the run)."""
    estimator = pickle.loads(estimator_path.read_bytes())
    run = measure(devices, workers, estimator=estimator)
    point = {key: run[key] for key in ("devices", "state", "load_avg_1m")}
    point.update({"rollout_s": round(run["rollout_s"], 3), "fanout_s": round(run["fanout_s"], 3),
                  "device_side_s": round(run["device_side_s"], 3) if run["device_side_s"] else None,
                  "rollout_ms_per_device": round(run["rollout_s"] * 1000 / devices, 2),
                  "ratio": round(run["rollout_s"] / run["fanout_s"], 2) if run["fanout_s"] else None})
    return point


def main(argv: list[str] | None = None) -> int:
    """Measure each fleet size; write results/fleet_rollout_growth.json and .png after every size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 300 devices")
    parser.add_argument("--sizes", default="100,1000,3000")
    parser.add_argument("--workers", type=int, default=64, help="simulator OTA threads")
    parser.add_argument("--size-timeout", type=float, default=900, help="seconds allowed per fleet size")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: one size, JSON on stdout
    parser.add_argument("--estimator", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one_size(args.one, args.workers, args.estimator)), flush=True)
        return 0
    sizes = [100, 300] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    load_start = os.getloadavg()
    from control_plane.registry import pipeline

    # Trained once: the model is the same at every size and training is minutes on busy cores (not measured).
    estimator_path = Path(tempfile.mkdtemp(prefix="edgeloop-growth-")) / "estimator.pkl"
    estimator_path.write_bytes(pickle.dumps(pipeline.train_mlp(pipeline.load_sklearn_dataset("digits"))))
    points: list[dict[str, Any]] = []
    for devices in sizes:
        command = [sys.executable, __file__, "--one", str(devices), "--workers", str(args.workers),
                   "--estimator", str(estimator_path)]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=args.size_timeout,
                                 check=False).stdout
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            point = json.loads(lines[-1][7:]) if lines else {"devices": devices, "state": "failed"}
        except subprocess.TimeoutExpired:
            point = {"devices": devices, "state": f"timed out after {args.size_timeout:.0f} s"}
        points.append(point)
        print(f"devices={devices:>5,}  {point}", flush=True)
        report(points, args, load_start)
    shutil.rmtree(estimator_path.parent, ignore_errors=True)
    return 0


def report(points: list[dict[str, Any]], args: argparse.Namespace, load_start: tuple[float, float, float]) -> None:
    """Write the JSON and the plot for the sizes measured so far."""
    done = [p for p in points if "rollout_s" in p]
    sizes = [p["devices"] for p in done]
    checks = []
    for point in points:
        if "rollout_s" not in point:
            checks.append({"name": f"deploy -> all {point['devices']:,} activated (control plane view)",
                           "target": f"<= {PER_DEVICE_TARGET_MS:g} ms per device", "measured": point["state"],
                           "peer": None, "peer_note": "no peer number: the size did not complete", "unit": "s",
                           "ratio": None, "pass": False})
            continue
        peer_ok = isinstance(point["fanout_s"], int | float) and math.isfinite(point["fanout_s"])
        note = None if peer_ok else (f"no peer number: the raw fan-out did not reach all {point['devices']:,} "
                                     "subscribers within its 60 s limit in this run")
        budget_s = PER_DEVICE_TARGET_MS * point["devices"] / 1000
        checks.append({"name": f"deploy -> all {point['devices']:,} activated (control plane view) vs raw "
                               "retained fan-out of the manifests",
                       "target": f"<= {PER_DEVICE_TARGET_MS:g} ms per device ({budget_s:g} s)",
                       "measured": point["rollout_s"], "peer": point["fanout_s"] if peer_ok else None,
                       "peer_note": note, "unit": "s", "ratio": point["ratio"] if peer_ok else None,
                       "pass": point["state"] == "succeeded"
                       and point["rollout_ms_per_device"] <= PER_DEVICE_TARGET_MS})
    panels = [
        {"xlabel": "simulated devices in the rollout", "ylabel": "seconds until all activated", "logx": True,
         "logy": True, "subtitle": "wall time (log-log)",
         "series": {"Edgeloop rollout (deploy -> succeeded)": (sizes, [p["rollout_s"] for p in done]),
                    "Edgeloop, device view (all report activated)": (sizes, [p["device_side_s"] for p in done]),
                    "peer: mosquitto raw retained fan-out": (sizes, [p["fanout_s"] for p in done])}},
        {"xlabel": "simulated devices in the rollout", "ylabel": "milliseconds per device", "logx": True,
         "subtitle": "rollout cost per device",
         "series": {"Edgeloop rollout": (sizes, [p["rollout_ms_per_device"] for p in done]),
                    "peer: raw fan-out": (sizes, [p["fanout_s"] * 1000 / p["devices"] for p in done])}},
    ]
    png = plot(NAME, panels, "int8 rollout vs fleet size (one control plane, one simulator process, same run)",
               quick=args.quick)
    path = write_results(NAME, {
        "title": "Rollout time vs fleet size (raw broker fan-out of the same manifests, same run)",
        "target": f"<= {PER_DEVICE_TARGET_MS:g} ms per device at every size (fleet_rollout: 1,000 in {TARGET_S:g} s)",
        "measured": done[-1]["rollout_s"] if done else None, "peer": checks[-1]["peer"] if done else None,
        "unit": "s", "ratio": checks[-1]["ratio"] if done else None,
        "ratio_note": "Edgeloop rollout seconds / raw fan-out seconds, largest size",
        "pass": all(c["pass"] for c in checks), "checks": checks, "plot": png.name,
        "config": {"sizes": [p["devices"] for p in points], "quick": args.quick,
                   "size_timeout_s": args.size_timeout, "ota_threads": args.workers,
                   "edgeloop": "edgeloop serve (uvicorn, 1 worker), SQLite WAL, MQTT 5 bridge (shared subscription), "
                               "strategy all_at_once, EDGELOOP_FLEET_STEP_SECONDS=0.5; devices download the int8 "
                               "artifact over HTTP with their own token, verify sha256 and signature, self-test",
                   "devices": "edge_agent.simulator.Fleet in the benchmark process (epoll, shared onnxruntime "
                              "session per sha256), on the same 2 cores as the server and the broker",
                   "peer": "one paho publisher, QoS 1 retained, one manifest per device topic; N paho subscribers "
                           "on one epoll loop"},
        "details": {"points": points},
        "host": host(load_start),
    }, quick=args.quick)
    print(f"wrote {path} and {png}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Approval -> execution started: how long an approved proposal waits before an executor claims it.

One `edgeloop serve` (uvicorn, 1 worker). Proposals (retrain.request, whose executor does the least work) are
created with an agent token, then approved one at a time by an approver at a fixed rate. Latency per proposal
is claimed_at - decided_at, both stamped by the server inside the approving and the claiming transactions
(same clock). The executor on the approving replica is woken right after the approval's response; an
executor on another replica finds it within EDGELOOP_APPROVAL_POLL_SECONDS (0.05 s). There is no peer: no
other system in reach executes approvals.

Usage: ``python benchmarks/approval_latency.py [--quick] [--proposals 100] [--rate 5] [--postgres]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._serve import free_port, make_tokens, percentile, postgres_database, serve

NAME = "approval_latency"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_P99_MS = 200.0


def run(url: str, tokens: dict[str, str], proposals: int, rate: float) -> dict[str, Any]:
    """Create, approve and wait for ``proposals``; return latency percentiles (ms)."""
    def headers(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[name]}"}

    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as http:
        http.post("/models", json={"name": "bench"}, headers=headers("ops"))
        http.post("/models/bench/versions", json={"version": 1}, headers=headers("ops"))
        ids = []
        for k in range(proposals):
            created = http.post("/proposals", headers=headers("agent"), json={
                "action": {"kind": "retrain.request", "model": "bench", "version": 1,
                           "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-02T00:00:00Z",
                           "cohort": {"k": k}},
                "expected_effect": "bench"})
            created.raise_for_status()
            ids.append(created.json()["id"])
        start = time.monotonic()
        for k, proposal_id in enumerate(ids):
            time.sleep(max(0.0, start + k / rate - time.monotonic()))
            http.post(f"/proposals/{proposal_id}/approve", json={"reason": "bench"},
                      headers=headers("approver")).raise_for_status()
        latencies = []
        deadline = time.monotonic() + 120
        for proposal_id in ids:
            while True:
                body = http.get(f"/proposals/{proposal_id}", headers=headers("agent")).json()
                if body["state"] in ("executed", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            decided = datetime.fromisoformat(body["decided_at"])
            claimed = datetime.fromisoformat(body["claimed_at"]) if body["claimed_at"] else None
            if body["state"] == "executed" and claimed is not None:
                latencies.append((claimed - decided).total_seconds() * 1000)
    return {"proposals": proposals, "executed": len(latencies), "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2), "max_ms": round(max(latencies), 2) if latencies else None}


def side(engine: str, work: Path, proposals: int, rate: float, **env: str) -> dict[str, Any]:
    """Run one server configuration on a fresh database."""
    import contextlib

    label = engine
    database = postgres_database() if engine == "postgresql" else contextlib.nullcontext(
        f"sqlite:///{work / f'{label}.db'}")
    with database as database_url:
        tokens = make_tokens(database_url, {"ops": "operator", "agent": "agent", "approver": "approver"})
        port = free_port()
        (work / label).mkdir()
        with serve(work / label / "data", database_url, port, **env):
            return run(f"http://127.0.0.1:{port}", tokens, proposals, rate)


def main(argv: list[str] | None = None) -> int:
    """Measure and write results/approval_latency.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 proposals")
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="approvals per second")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.proposals = 20
    load_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-approval-bench-"))
    runs: dict[str, Any] = {}
    try:
        for engine in ["sqlite"] + (["postgresql"] if args.postgres else []):
            runs[engine] = side(engine, work, args.proposals, args.rate)
            print(json.dumps({engine: runs[engine]}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = [{"name": f"{engine}: p99 approval -> execution started", "target": f"<= {TARGET_P99_MS:g} ms",
               "measured": run_["p99_ms"], "peer": None, "unit": "ms", "ratio": None,
               "pass": run_["p99_ms"] <= TARGET_P99_MS and run_["executed"] == run_["proposals"]}
              for engine, run_ in runs.items()]
    headline = runs["sqlite"]
    result = {
        "name": NAME, "title": "Approval -> execution started (claimed_at - decided_at, server clock)",
        "target": f"p99 <= {TARGET_P99_MS:g} ms", "measured": headline["p99_ms"],
        "peer": None, "unit": "ms", "ratio": None,
        "pass": all(c["pass"] for c in checks), "checks": checks,
        "config": {"server": "edgeloop serve, uvicorn 1 worker; executor woken after the approval response, "
                             "else polls every 0.05 s",
                   "action": "retrain.request", "proposals": args.proposals, "approvals_per_s": args.rate,
                   "quick": args.quick},
        "details": runs,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                 "load_avg_1m_at_start": load_start, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps({k: result[k] for k in ("measured", "peer", "pass")}))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

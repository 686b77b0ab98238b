"""Assistant latency without an LLM: first streamed byte and whole templated answer, p50/p95, per question kind.

A served control plane (one uvicorn worker, SQLite, the eval's seeded scenario) answers the eval set's questions
over the SSE API through one keep-alive client, one question at a time (closed loop). Targets (issue 13): first
byte <= 300 ms and whole deterministic answer <= 1 s at p95.

Usage: ``python benchmarks/assistant_latency.py [--rounds 5] [--quick]``; writes
benchmarks/results/assistant_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from evals.assistant_eval import CASES, ask, new_thread
from evals.assistant_scenario import seeded_control_plane

RESULTS = Path(__file__).resolve().parent / "results" / "assistant_latency.json"


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": 1000 * ordered[len(ordered) // 2],
            "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max_ms": 1000 * ordered[-1], "n": len(ordered)}


def measure(rounds: int) -> dict[str, Any]:
    """Ask every eval question ``rounds`` times (first round is warm-up) and summarise the latencies."""
    cases = [c for c in yaml.safe_load(CASES.read_text())["cases"] if "{alert" not in c["question"]]
    firsts: list[float] = []
    totals: list[float] = []
    by_intent: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, seeded_control_plane(Path(tmp)) as scenario, \
            httpx.Client(timeout=60) as http:
        for round_index in range(rounds + 1):
            for case in cases:
                role = case.get("role", "operator")
                asked = ask(http, scenario, role, new_thread(http, scenario, role), case["question"])
                if round_index == 0:
                    continue  # warm-up: the runbook index and the checkpointer tables are built on first use
                firsts.append(asked["first_byte_s"])
                totals.append(asked["total_s"])
                by_intent.setdefault(str(asked["final"].get("intent")), []).append(asked["total_s"])
    return {"first_byte": _quantiles(firsts), "whole_answer": _quantiles(totals),
            "whole_answer_by_intent": {k: _quantiles(v) for k, v in sorted(by_intent.items())}}


def main() -> None:
    """Run, print and write the JSON results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one measured round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    load_before = os.getloadavg()
    measured = measure(rounds)
    first_p95, whole_p95 = measured["first_byte"]["p95_ms"], measured["whole_answer"]["p95_ms"]
    results = {"name": "assistant_latency", "target": "first streamed event p95 <= 300 ms, whole templated answer "
               "p95 <= 1000 ms", "measured": f"first event p95 {first_p95:.0f} ms, whole answer p95 {whole_p95:.0f} ms",
               "peer": None, "ratio": None, "pass": first_p95 <= 300 and whole_p95 <= 1000,
               "config": {"server": "uvicorn, 1 worker, SQLite, in-process thread", "client": "one httpx keep-alive "
                          "client, closed loop, a new thread per question", "rounds": rounds, "llm": None},
               "load_average_before": load_before, **measured, "load_average_after": os.getloadavg(),
               "machine": platform.platform(), "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: results[k] for k in ("first_byte", "whole_answer", "load_average_before",
                                              "load_average_after")}, indent=2))


if __name__ == "__main__":
    main()

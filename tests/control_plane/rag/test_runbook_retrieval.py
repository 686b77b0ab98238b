"""Retrieval quality on the runbook regression set (evals/datasets/runbook-retrieval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control_plane.rag import RUNBOOKS, RagStore
from evals.metrics import evaluate_thresholds, mean_metric, recall_at_k, reciprocal_rank

CASES = Path(__file__).resolve().parents[3] / "evals" / "datasets" / "runbook-retrieval" / "cases.jsonl"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RagStore:
    rag = RagStore(data_dir=tmp_path_factory.mktemp("chroma"))
    rag.ingest(RUNBOOKS, Path(__file__).resolve().parents[3] / "runbooks")
    return rag


@pytest.mark.parametrize(("mode", "min_recall_at_3"), [("lexical", 0.8), ("hybrid", 0.8), ("dense", 0.6)])
def test_runbook_questions_find_their_section(store: RagStore, mode: str, min_recall_at_3: float) -> None:
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(cases) == 12
    recalls, ranks = [], []
    for case in cases:
        hits = store.search(RUNBOOKS, case["question"], k=5, mode=mode)  # type: ignore[arg-type]
        ranked = [f"{h.source}|{h.heading}" for h in hits]
        wanted = {f"{case['source']}|{case['heading']}"}
        recalls.append(recall_at_k(ranked, wanted, 3))
        ranks.append(reciprocal_rank(ranked, wanted))
    gate = evaluate_thresholds({"recall_at_3": mean_metric(recalls)}, minimums={"recall_at_3": min_recall_at_3})
    assert gate.passed, (mode, mean_metric(recalls), mean_metric(ranks))

"""HaluEval-QA retrieval through the real ``RagStore.search`` path (chromadb's HNSW index) next to exact search.

Each held-out question (rows 8,000-9,999 by default) must find its own passage among all 10,000 QA passages,
stored in a RagStore collection exactly as the product stores chunks. Dense and hybrid go through
``RagStore.search`` (chromadb's approximate index, with the store's HNSW configuration); "exact" ranks by brute
cosine over the same embedding function. Run ``python benchmarks/rag_store_recall.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_plane.rag.bm25 import reciprocal_rank_fusion
from control_plane.rag.store import RagStore
from evals.halueval import load_task

RESULTS = Path(__file__).resolve().parent / "results" / "rag-store-recall.json"


def _load_passages(store: RagStore, passages: list[str]) -> None:
    """Add every passage to the store's collection (same configuration and embedding as ingested chunks)."""
    collection = store.collection("halueval-qa")
    for start in range(0, len(passages), 1000):
        ids = [str(i) for i in range(start, min(start + 1000, len(passages)))]
        collection.add(ids=ids, documents=[passages[int(i)] for i in ids],
                       metadatas=[{"source": i, "heading": "", "chunk_index": 0} for i in ids])


def measure(rows: int, start: int) -> dict[str, Any]:
    """Return recall@1 per mode: store dense/hybrid (HNSW), exact dense/hybrid, lexical."""
    examples = load_task("qa")
    passages = [e.context for e in examples]
    same: dict[str, set[str]] = {}
    for index, text in enumerate(passages):
        same.setdefault(text, set()).add(str(index))
    queries = list(range(start, min(len(examples), start + rows)))
    with tempfile.TemporaryDirectory() as folder:
        store = RagStore(data_dir=folder)
        started = time.perf_counter()
        _load_passages(store, passages)
        load_seconds = time.perf_counter() - started
        matrix = np.asarray(store.embedding(passages), dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        hits: dict[str, list[bool]] = {m: [] for m in ("store dense", "store hybrid", "exact dense",
                                                        "exact hybrid", "lexical")}
        search_seconds = 0.0
        for q in queries:
            question, relevant = examples[q].question, same[passages[q]]
            began = time.perf_counter()
            dense = store.search("halueval-qa", question, k=1, mode="dense")
            hybrid = store.search("halueval-qa", question, k=1, mode="hybrid")
            search_seconds += time.perf_counter() - began
            lexical = store.search("halueval-qa", question, k=20, mode="lexical")
            vector = np.asarray(store.embedding([question])[0], dtype=np.float32)
            sims = matrix @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
            top = np.argsort(-sims, kind="stable")[:20]
            exact = [str(i) for i in top]
            fused = reciprocal_rank_fusion([exact, [h.chunk_id for h in lexical]])
            hits["store dense"].append(bool(dense) and dense[0].chunk_id in relevant)
            hits["store hybrid"].append(bool(hybrid) and hybrid[0].chunk_id in relevant)
            hits["exact dense"].append(exact[0] in relevant)
            hits["exact hybrid"].append(fused[0][0] in relevant)
            hits["lexical"].append(bool(lexical) and lexical[0].chunk_id in relevant)
        config = dict(store.collection("halueval-qa").configuration.get("hnsw") or {})
    return {"questions": len(queries), "passages": len(passages), "rows": f"{queries[0]}-{queries[-1]}",
            "recall_at_1": {m: round(float(np.mean(v)), 4) for m, v in hits.items()},
            "hnsw_configuration": config, "load_seconds": round(load_seconds, 1),
            "store_search_ms_per_query_dense_plus_hybrid": round(1000 * search_seconds / len(queries), 2),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    """Run from the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 held-out questions instead of 2,000")
    parser.add_argument("--start", type=int, default=8000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = measure(500 if args.quick else 2000, args.start)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The RAG store: chromadb collections of Markdown chunks with dense, lexical and hybrid retrieval."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import chromadb
from chromadb.api.types import Documents, EmbeddingFunction

from control_plane.rag.bm25 import BM25Index, reciprocal_rank_fusion
from control_plane.rag.embeddings import HashingEmbeddingFunction
from control_plane.rag.ingest import IngestReport, ingest_markdown

RUNBOOKS = "runbooks"
DOCS = "docs"
COLLECTIONS = (RUNBOOKS, DOCS)
RetrievalMode = Literal["dense", "lexical", "hybrid"]
# Measured on HaluEval-QA retrieval (see evals/README.md): BM25 beat hashing-dense and the fused ranking.
DEFAULT_MODE: RetrievalMode = "lexical"
# chromadb's defaults (M 16, ef_construction 100, ef_search 100) lost 6-8 points of recall@1 against exact search
# on 10k hashing-embedded passages; M 32 / ef_construction 200 / ef_search 400 comes within a point at ~5 ms a
# query (benchmarks/rag_store_recall.py). Fixed when a collection is created; existing ones keep theirs.
# ef_search is set at creation because collection.modify() did not change it for an open index (chromadb 1.5.9).
HNSW_CONFIGURATION = {"space": "cosine", "max_neighbors": 32, "ef_construction": 200, "ef_search": 400}


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk."""

    chunk_id: str
    text: str
    source: str
    heading: str
    chunk_index: int
    score: float
    rank: int


def make_client(*, data_dir: str | Path | None = None, url: str | None = None) -> Any:
    """Return a chromadb HttpClient for ``url``, else a PersistentClient under ``data_dir``."""
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"chroma url must be http(s)://host[:port], got {url!r}")
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        return chromadb.HttpClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https")
    if data_dir is None:
        raise ValueError("give a data_dir (embedded store) or a url (chroma server)")
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    settings = chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
    return chromadb.PersistentClient(path=str(path), settings=settings)


class RagStore:
    """Runbook and doc collections with Markdown ingest and dense/lexical/hybrid search."""

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        url: str | None = None,
        embedding: EmbeddingFunction[Documents] | None = None,
        client: Any = None,
    ) -> None:
        self.client = client if client is not None else make_client(data_dir=data_dir, url=url)
        self.embedding = embedding if embedding is not None else HashingEmbeddingFunction()
        # BM25 indexes are rebuilt lazily; the key notices writes by other store instances via count().
        self._lexical: dict[str, tuple[tuple[int, int], BM25Index, list[str], list[str], list[dict[str, Any]]]] = {}
        self._generation = 0

    def collection(self, name: str) -> Any:
        """Return the named collection, creating it with this store's embedding function."""
        return self.client.get_or_create_collection(
            name=name, embedding_function=self.embedding, configuration={"hnsw": HNSW_CONFIGURATION}
        )

    def ingest(self, name: str, root: str | Path, *, prune: bool = True, max_chars: int = 1200) -> IngestReport:
        """Ingest Markdown under ``root`` into collection ``name`` (unchanged files are a no-op)."""
        report = ingest_markdown(self.collection(name), root, prune=prune, max_chars=max_chars)
        if report.changed:
            self._generation += 1
        return report

    def count(self, name: str) -> int:
        """Return the number of chunks in collection ``name``."""
        return int(self.collection(name).count())

    def search(self, name: str, query: str, *, k: int = 5, mode: RetrievalMode = DEFAULT_MODE) -> list[Hit]:
        """Return the top ``k`` chunks for ``query`` by dense, lexical (BM25) or hybrid (RRF) ranking."""
        if k < 1:
            raise ValueError("k must be >= 1")
        if not query.strip():
            return []
        pool = max(4 * k, 20)
        if mode == "dense":
            return self._dense(name, query, k)
        if mode == "lexical":
            return self._lexical_hits(name, query, k)
        if mode != "hybrid":
            raise ValueError(f"unknown retrieval mode {mode!r}")
        dense = self._dense(name, query, pool)
        lexical = self._lexical_hits(name, query, pool)
        by_id = {h.chunk_id: h for h in [*dense, *lexical]}
        fused = reciprocal_rank_fusion([[h.chunk_id for h in dense], [h.chunk_id for h in lexical]])
        return [_rescored(by_id[cid], score, rank) for rank, (cid, score) in enumerate(fused[:k], start=1)]

    def _dense(self, name: str, query: str, k: int) -> list[Hit]:
        collection = self.collection(name)
        total = int(collection.count())
        if total == 0:
            return []
        result = collection.query(
            query_texts=[query], n_results=min(k, total), include=["documents", "metadatas", "distances"]
        )
        hits = []
        rows = zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        )
        for rank, (cid, doc, meta, distance) in enumerate(rows, start=1):
            hits.append(_hit(cid, doc, meta, 1.0 - float(distance), rank))
        return hits

    def _lexical_hits(self, name: str, query: str, k: int) -> list[Hit]:
        index, ids, docs, metas = self._lexical_index(name)
        return [_hit(ids[i], docs[i], metas[i], score, rank) for rank, (i, score) in enumerate(index.top(query, k), 1)]

    def _lexical_index(self, name: str) -> tuple[BM25Index, list[str], list[str], list[dict[str, Any]]]:
        collection = self.collection(name)
        key = (self._generation, int(collection.count()))
        cached = self._lexical.get(name)
        if cached is None or cached[0] != key:
            got = collection.get(include=["documents", "metadatas"])
            # Sort by id so ranking ties break the same way on every run.
            rows = sorted(zip(got["ids"], got["documents"], got["metadatas"], strict=True))
            ids = [r[0] for r in rows]
            docs = [r[1] or "" for r in rows]
            metas = [dict(r[2] or {}) for r in rows]
            cached = (key, BM25Index(docs), ids, docs, metas)
            self._lexical[name] = cached
        return cached[1], cached[2], cached[3], cached[4]


def _hit(chunk_id: str, text: str, meta: Any, score: float, rank: int) -> Hit:
    meta = dict(meta or {})
    return Hit(
        chunk_id=chunk_id,
        text=text,
        source=str(meta.get("source", "")),
        heading=str(meta.get("heading", "")),
        chunk_index=int(meta.get("chunk_index", 0)),
        score=score,
        rank=rank,
    )


def _rescored(hit: Hit, score: float, rank: int) -> Hit:
    return Hit(hit.chunk_id, hit.text, hit.source, hit.heading, hit.chunk_index, score, rank)

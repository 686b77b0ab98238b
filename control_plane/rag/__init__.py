"""Retrieval for the ops assistant and the evals: offline embeddings, Markdown ingest, chromadb store."""

from control_plane.rag.bm25 import BM25Index, reciprocal_rank_fusion
from control_plane.rag.chunking import Chunk, chunk_markdown
from control_plane.rag.embeddings import (
    EmbeddingUnavailableError,
    HashingEmbeddingFunction,
    MiniLMOnnxEmbeddingFunction,
    make_embedding_function,
    resolve_minilm_files,
)
from control_plane.rag.ingest import IngestReport, ingest_markdown
from control_plane.rag.store import COLLECTIONS, DEFAULT_MODE, DOCS, RUNBOOKS, Hit, RagStore, make_client

__all__ = [
    "COLLECTIONS",
    "DEFAULT_MODE",
    "DOCS",
    "RUNBOOKS",
    "BM25Index",
    "Chunk",
    "EmbeddingUnavailableError",
    "HashingEmbeddingFunction",
    "Hit",
    "IngestReport",
    "MiniLMOnnxEmbeddingFunction",
    "RagStore",
    "chunk_markdown",
    "ingest_markdown",
    "make_client",
    "make_embedding_function",
    "reciprocal_rank_fusion",
    "resolve_minilm_files",
]

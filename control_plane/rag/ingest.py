"""Idempotent Markdown ingestion into a chromadb collection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_plane.rag.chunking import chunk_markdown


@dataclass(slots=True)
class IngestReport:
    """What one ingest run changed, by source path."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    chunks_written: int = 0

    @property
    def changed(self) -> bool:
        """Return whether anything was written or deleted."""
        return bool(self.added or self.updated or self.removed)


def markdown_files(root: Path) -> list[Path]:
    """Return the Markdown files under ``root`` (or ``root`` itself), sorted for a stable order."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or directory: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".md", ".markdown"))


def _source_name(path: Path, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    return path.resolve().relative_to(base.resolve()).as_posix()


def _stored_hashes(collection: Any) -> dict[str, tuple[str, list[str]]]:
    """Return source -> (file hash, chunk ids) for everything in the collection."""
    stored: dict[str, tuple[str, list[str]]] = {}
    result = collection.get(include=["metadatas"])
    for chunk_id, meta in zip(result["ids"], result["metadatas"] or [], strict=False):
        source = str(meta.get("source", ""))
        file_hash, ids = stored.get(source, (str(meta.get("file_hash", "")), []))
        # Differing hashes inside one source mean a half-written ingest: force a rewrite.
        if file_hash != meta.get("file_hash"):
            file_hash = ""
        ids.append(chunk_id)
        stored[source] = (file_hash, ids)
    return stored


def ingest_markdown(
    collection: Any, root: str | Path, *, prune: bool = True, max_chars: int = 1200, source_prefix: str = ""
) -> IngestReport:
    """Chunk and store every Markdown file under ``root``; unchanged files are left alone.

    A file's chunks are replaced as a whole when its content hash changes; with ``prune``, chunks whose
    source (under ``source_prefix``) no longer exists are deleted.
    """
    root_path = Path(root)
    report = IngestReport()
    stored = _stored_hashes(collection)
    seen: set[str] = set()
    for path in markdown_files(root_path):
        raw = path.read_bytes()
        source = source_prefix + _source_name(path, root_path)
        seen.add(source)
        file_hash = hashlib.sha256(raw).hexdigest()
        previous = stored.get(source)
        if previous is not None and previous[0] == file_hash:
            report.unchanged.append(source)
            continue
        text = raw.decode("utf-8", errors="replace")
        chunks = chunk_markdown(text, source, max_chars=max_chars)
        if previous is not None:
            collection.delete(ids=previous[1])
        if chunks:
            collection.add(
                ids=[c.chunk_id for c in chunks],
                documents=[c.text for c in chunks],
                metadatas=[_metadata(c.source, c.heading, c.chunk_index, c.content_hash, file_hash) for c in chunks],
            )
        (report.updated if previous is not None else report.added).append(source)
        report.chunks_written += len(chunks)
    if prune:
        for source, (_, ids) in sorted(stored.items()):
            if source.startswith(source_prefix) and source not in seen:
                collection.delete(ids=ids)
                report.removed.append(source)
    return report


def _metadata(source: str, heading: str, index: int, content_hash: str, file_hash: str) -> dict[str, Any]:
    return {
        "source": source,
        "heading": heading,
        "chunk_index": index,
        "content_hash": content_hash,
        "file_hash": file_hash,
    }


def sources_of(report: IngestReport) -> Iterable[str]:
    """Return every source path the report mentions."""
    return [*report.added, *report.updated, *report.unchanged, *report.removed]

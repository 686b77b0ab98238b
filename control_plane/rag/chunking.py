"""Heading-aware Markdown chunking."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable piece of a Markdown file, under its heading path."""

    source: str
    heading: str
    chunk_index: int
    body: str

    @property
    def text(self) -> str:
        """Return the text that is embedded and indexed: heading path, then body."""
        return f"{self.heading}\n\n{self.body}" if self.heading else self.body

    @property
    def content_hash(self) -> str:
        """Return the sha256 of the chunk text."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def chunk_id(self) -> str:
        """Return the stable id of the chunk in its collection."""
        return f"{self.source}#{self.chunk_index}"


def _sections(markdown: str) -> list[tuple[str, list[str]]]:
    """Split into (heading path, lines) sections; headings inside code fences are text."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    path: list[tuple[int, str]] = []
    in_fence = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            level = len(match.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2))]
            sections.append((" > ".join(title for _, title in path), []))
        else:
            sections[-1][1].append(line)
    return sections


def _paragraphs(lines: list[str]) -> list[str]:
    """Group lines into paragraphs at blank lines, never splitting a code fence."""
    paragraphs: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                paragraphs.append("\n".join(current))
                current = []
        else:
            current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def chunk_markdown(markdown: str, source: str, max_chars: int = 1200) -> list[Chunk]:
    """Split ``markdown`` into chunks of at most ~``max_chars`` that never cross a heading."""
    if max_chars < 100:
        raise ValueError("max_chars must be >= 100")
    chunks: list[Chunk] = []
    for heading, lines in _sections(markdown):
        pieces: list[str] = []
        size = 0
        for paragraph in _paragraphs(lines):
            if pieces and size + len(paragraph) > max_chars:
                chunks.append(Chunk(source, heading, len(chunks), "\n\n".join(pieces)))
                pieces, size = [], 0
            # A single oversized paragraph is kept whole: cutting a table or code block mid-way hurts more.
            pieces.append(paragraph)
            size += len(paragraph) + 2
        if pieces:
            chunks.append(Chunk(source, heading, len(chunks), "\n\n".join(pieces)))
    return chunks

"""Heading-aware Markdown chunking."""

from __future__ import annotations

from control_plane.rag.bm25 import BM25Index, reciprocal_rank_fusion
from control_plane.rag.chunking import chunk_markdown

DOC = """Intro line.

# Rollback

Pause the rollout.

## Steps

1. Create the rollback rollout.

```bash
# not a heading
edgeloop rollout pause
```

## After

Mark the version blocked.
"""


def test_chunks_follow_headings_and_keep_code_fences_whole() -> None:
    chunks = chunk_markdown(DOC, "rollback.md")
    assert [c.heading for c in chunks] == ["", "Rollback", "Rollback > Steps", "Rollback > After"]
    steps = chunks[2]
    assert "# not a heading" in steps.body and "edgeloop rollout pause" in steps.body
    assert steps.text.startswith("Rollback > Steps\n\n")
    assert [c.chunk_index for c in chunks] == [0, 1, 2, 3]
    assert chunks[2].chunk_id == "rollback.md#2"
    assert len({c.content_hash for c in chunks}) == 4


def test_long_sections_split_at_paragraphs() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(10))
    chunks = chunk_markdown(f"# Big\n\n{body}", "big.md", max_chars=500)
    assert len(chunks) > 1
    assert all(c.heading == "Big" and len(c.body) <= 500 for c in chunks)
    assert "Paragraph 0" in chunks[0].body and "Paragraph 9" in chunks[-1].body


def test_bm25_and_rrf() -> None:
    index = BM25Index(["the broker is down", "roll back the model", "model drift alert", ""])
    assert [i for i, _ in index.top("rolling back a model", 2)] == [1, 2]
    assert index.top("nothing matches", 3) == []
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c"]])
    assert [item for item, _ in fused] == ["b", "c", "a"]
    assert fused[0][1] == 1 / 62 + 1 / 61

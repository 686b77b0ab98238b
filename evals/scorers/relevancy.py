"""Offline answer relevancy: how much an answer addresses its question."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from evals.scorers.base import ScoreResult, clamp_unit
from evals.scorers.text import coerce_text, content_tokens

EmbedFn = Callable[[list[str]], Any]


def _default_embed() -> EmbedFn:
    from control_plane.rag.embeddings import HashingEmbeddingFunction

    return HashingEmbeddingFunction()


class AnswerRelevancyScorer:
    """Score relevancy as a blend of embedding cosine and coverage of the question's content words."""

    name = "answer_relevancy"

    def __init__(self, embed: EmbedFn | None = None, coverage_weight: float = 0.5) -> None:
        if not 0.0 <= coverage_weight <= 1.0:
            raise ValueError("coverage_weight must be in [0, 1]")
        self.embed = embed if embed is not None else _default_embed()
        self.coverage_weight = coverage_weight

    def score(self, *, question: str | bytes, answer: str | bytes) -> ScoreResult:
        """Return relevancy in [0, 1]; an empty answer or question scores 0.0 with a note."""
        question_text = coerce_text(question, field="question")
        answer_text = coerce_text(answer, field="answer")
        if not answer_text.strip() or not question_text.strip():
            return ScoreResult(0.0, self.name, note="empty question or answer: nothing is answered")
        vectors = np.asarray(self.embed([question_text, answer_text]), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        cosine = float(vectors[0] @ vectors[1] / (norms[0] * norms[1])) if norms.all() else 0.0
        asked = {t.key for t in content_tokens(question_text)}
        # Question words the answer repeats are weak but cheap evidence that it stays on topic.
        covered = len(asked & {t.key for t in content_tokens(answer_text)}) / len(asked) if asked else 0.0
        blended = (1 - self.coverage_weight) * clamp_unit(cosine) + self.coverage_weight * covered
        return ScoreResult(clamp_unit(blended), self.name, details={"cosine": cosine, "coverage": covered})

"""The scorer interface and its typed results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Verdict = Literal["supported", "unsupported", "not_checkable"]


@dataclass(frozen=True, slots=True)
class SupportSpan:
    """The context passage span that best supports a claim."""

    context_index: int
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class ClaimVerdict:
    """One claim (sentence) of an answer and whether the context supports it."""

    claim: str
    start: int
    end: int
    verdict: Verdict
    support: float
    unsupported_terms: tuple[str, ...] = ()
    best_span: SupportSpan | None = None


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """A faithfulness score in [0, 1] (1 = fully supported) with per-claim verdicts."""

    score: float
    scorer: str
    claims: tuple[ClaimVerdict, ...] = ()
    note: str = ""
    details: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A NaN score would poison every aggregate downstream; refuse it at the source.
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"score must be a finite number in [0, 1], got {self.score!r}")

    @property
    def unsupported_claims(self) -> tuple[ClaimVerdict, ...]:
        """Return the claims judged unsupported."""
        return tuple(c for c in self.claims if c.verdict == "unsupported")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


Contexts = str | bytes | Sequence[str | bytes] | None


@runtime_checkable
class Scorer(Protocol):
    """Something that scores how well an answer is supported by its contexts."""

    name: str

    def score(self, *, answer: str | bytes, contexts: Contexts, question: str | bytes | None = None) -> ScoreResult:
        """Score one answer against its contexts (and optionally the question it answers)."""
        ...


def clamp_unit(value: float) -> float:
    """Return ``value`` clipped to [0, 1], mapping NaN to 0."""
    if not math.isfinite(value):
        return 0.0 if math.isnan(value) or value < 0 else 1.0
    return min(1.0, max(0.0, value))

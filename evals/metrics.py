"""Retrieval and detection metrics, and pass/fail against thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Return the share of relevant ids found in the top ``k`` (0.0 when nothing is relevant)."""
    _check_k(k)
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Return the share of the top ``k`` slots holding a relevant id (missing slots count as misses)."""
    _check_k(k)
    return len(set(ranked[:k]) & relevant) / k


def reciprocal_rank(ranked: Sequence[str], relevant: set[str]) -> float:
    """Return 1 / rank of the first relevant id, or 0.0 if none is ranked."""
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            return 1.0 / position
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float] | set[str], k: int) -> float:
    """Return nDCG@k with gains ``rel`` and discount ``log2(rank + 1)`` (binary when given a set)."""
    _check_k(k)
    gains = dict.fromkeys(relevance, 1.0) if isinstance(relevance, set) else dict(relevance)
    dcg = sum(gains.get(item, 0.0) / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], start=1))
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def mean_metric(values: Sequence[float]) -> float:
    """Return the mean of per-query values (0.0 for none)."""
    return float(np.mean(values)) if len(values) else 0.0


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Return the area under the ROC curve (positives = label 1 should score higher); ties count half."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    if s.shape != y.shape or not np.isfinite(s).all():
        raise ValueError("scores and labels must have the same length and scores must be finite")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=float)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def length_controlled_auroc(
    scores: Sequence[float], labels: Sequence[int], lengths: Sequence[int]
) -> tuple[float, int]:
    """Return the AUROC over positive/negative pairs of *equal* length, and how many such pairs there are.

    It is the probability that a positive outscores a negative of the same word count (ties count half),
    so a score that only measures length gets exactly 0.5.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    lens = np.asarray(lengths, dtype=int)
    wins = 0.0
    pairs = 0
    for length in np.unique(lens):
        mask = lens == length
        pos = s[mask & (y == 1)]
        neg = s[mask & (y == 0)]
        if len(pos) and len(neg):
            both = np.concatenate([pos, neg])
            ranks = _average_ranks(both)
            wins += ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
            pairs += len(pos) * len(neg)
    if pairs == 0:
        raise ValueError("no positive/negative pair shares a length")
    return float(wins / pairs), pairs


@dataclass(frozen=True, slots=True)
class ThresholdCheck:
    """One metric compared with its threshold."""

    metric: str
    value: float
    threshold: float
    higher_is_better: bool
    passed: bool


@dataclass(frozen=True, slots=True)
class GateResult:
    """Overall pass/fail of a set of metrics against thresholds."""

    passed: bool
    checks: tuple[ThresholdCheck, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> tuple[ThresholdCheck, ...]:
        """Return the checks that failed."""
        return tuple(c for c in self.checks if not c.passed)


def evaluate_thresholds(
    values: Mapping[str, float],
    minimums: Mapping[str, float] | None = None,
    maximums: Mapping[str, float] | None = None,
) -> GateResult:
    """Pass only if every metric meets its minimum/maximum; a missing or NaN metric fails."""
    checks: list[ThresholdCheck] = []
    for bounds, higher in ((minimums or {}, True), (maximums or {}, False)):
        for metric, threshold in sorted(bounds.items()):
            value = float(values.get(metric, math.nan))
            ok = math.isfinite(value) and (value >= threshold if higher else value <= threshold)
            checks.append(ThresholdCheck(metric, value, threshold, higher, ok))
    return GateResult(all(c.passed for c in checks), tuple(checks))

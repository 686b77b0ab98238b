"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from evals.metrics import (
    auroc,
    evaluate_thresholds,
    length_controlled_auroc,
    mean_metric,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
)

RANKED = ["d3", "d1", "d7", "d2", "d9"]
RELEVANT = {"d1", "d2", "d5"}


def test_recall_and_precision_at_k() -> None:
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert precision_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 2)
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    # Fewer results than k: empty slots are misses.
    assert precision_at_k(["d1"], RELEVANT, 4) == pytest.approx(1 / 4)
    assert recall_at_k(RANKED, set(), 3) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(RANKED, RELEVANT, 0)


def test_reciprocal_rank_and_mean() -> None:
    assert reciprocal_rank(RANKED, RELEVANT) == pytest.approx(1 / 2)
    assert reciprocal_rank(RANKED, {"zz"}) == 0.0
    assert mean_metric([reciprocal_rank(RANKED, RELEVANT), 1.0, 0.0]) == pytest.approx(0.5)
    assert mean_metric([]) == 0.0


def test_ndcg_binary_and_graded() -> None:
    # Binary: hits at ranks 2 and 4 -> DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3) + 1/log2(4).
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(dcg / idcg)
    # Graded: gains 3 (d1 at rank 2) and 1 (d3 at rank 1) -> DCG = 1 + 3/log2(3); ideal = 3 + 1/log2(3).
    graded = {"d1": 3.0, "d3": 1.0}
    assert ndcg_at_k(RANKED, graded, 3) == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert ndcg_at_k(["d1", "d3"], graded, 2) == pytest.approx(1.0)
    assert ndcg_at_k(RANKED, set(), 3) == 0.0


def test_auroc_counts_ties_half() -> None:
    # Pairs (pos, neg): (0.9>0.1) (0.9>0.4) (0.4=0.4 -> half) (0.4>0.1) => 3.5 / 4.
    assert auroc([0.9, 0.4, 0.1, 0.4], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        auroc([float("nan"), 0.2], [1, 0])


def test_length_controlled_auroc_ignores_pure_length() -> None:
    lengths = [3, 3, 5, 5, 9]
    labels = [1, 0, 1, 0, 1]
    # A score that is the length itself cannot order pairs of equal length: exactly 0.5.
    assert length_controlled_auroc(lengths, labels, lengths) == (0.5, 2)
    # Within length 3 the positive wins, within length 5 it loses -> 0.5 over 2 pairs.
    assert length_controlled_auroc([0.9, 0.1, 0.2, 0.8, 0.0], labels, lengths) == (0.5, 2)
    assert length_controlled_auroc([0.9, 0.1, 0.8, 0.2, 0.0], labels, lengths) == (1.0, 2)
    with pytest.raises(ValueError):
        length_controlled_auroc([0.1, 0.2], [1, 0], [1, 2])


def test_thresholds_gate() -> None:
    gate = evaluate_thresholds(
        {"faithfulness": 0.91, "recall_at_5": 0.7, "latency_p95_s": 2.5},
        minimums={"faithfulness": 0.9, "recall_at_5": 0.8},
        maximums={"latency_p95_s": 3.0},
    )
    assert not gate.passed
    assert [c.metric for c in gate.failures] == ["recall_at_5"]
    assert evaluate_thresholds({"faithfulness": 0.95}, minimums={"faithfulness": 0.9}).passed
    # A missing or NaN metric fails the gate rather than passing silently.
    assert not evaluate_thresholds({}, minimums={"faithfulness": 0.9}).passed
    assert not evaluate_thresholds({"f": float("nan")}, maximums={"f": 1.0}).passed

"""The out-of-range test's null distribution and the categorical effect size, against scipy and enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from control_plane.drift.effects import outside_sorted, range_pvalue, total_variation_from_counts


@pytest.mark.parametrize(("n_ref", "n_cur"), [(2, 1), (3, 3), (4, 5), (6, 2)])
def test_range_pvalue_equals_the_permutation_distribution(n_ref: int, n_cur: int) -> None:
    # Every way to place the reference values among n_ref + n_cur exchangeable ranks is equally likely.
    total = n_ref + n_cur
    tally = [0] * (n_cur + 1)
    for positions in itertools.combinations(range(total), n_ref):
        low, high = positions[0], positions[-1]
        tally[sum(1 for i in range(total) if i not in positions and (i < low or i > high))] += 1
    for k in range(n_cur + 1):
        exact = Fraction(sum(tally[k:]), math.comb(total, n_ref))
        assert range_pvalue(np.array([k]), np.array([n_ref]), np.array([n_cur]))[0] == pytest.approx(float(exact),
                                                                                                      rel=1e-12)


@pytest.mark.parametrize(("n_ref", "n_cur", "k"), [(30, 1000, 10), (200, 50, 3), (5000, 5000, 4), (1000, 200_000, 700),
                                                   (200_000, 1_000_000, 5), (31, 31, 31)])
def test_range_pvalue_is_the_beta_binomial_tail(n_ref: int, n_cur: int, k: int) -> None:
    expected = stats.betabinom.sf(k - 1, n_cur, 2, n_ref - 1)
    assert range_pvalue(np.array([k]), np.array([n_ref]), np.array([n_cur]))[0] == pytest.approx(expected, rel=1e-6)


def test_range_pvalue_edges() -> None:
    p = range_pvalue(np.array([0, 3, 5, 1]), np.array([100, 1, 100, 0]), np.array([100, 100, 100, 10]))
    assert p.tolist() == [1.0, 1.0, pytest.approx(stats.betabinom.sf(4, 100, 2, 99)), 1.0]


def test_range_pvalue_holds_its_level_under_the_null() -> None:
    rng = np.random.default_rng(0)
    outside = []
    for _ in range(2000):
        reference, current = np.sort(rng.normal(size=40)), np.sort(rng.normal(size=60))
        outside.append(outside_sorted(reference, current))
    p = range_pvalue(np.array(outside), np.full(2000, 40), np.full(2000, 60))
    assert np.mean(p < 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_outside_counts_strictly_outside() -> None:
    reference = np.array([1.0, 2.0, 3.0])
    assert outside_sorted(reference, np.array([0.5, 1.0, 2.0, 3.0, 3.5, 9.0])) == 3
    assert outside_sorted(np.array([5.0, 5.0]), np.array([5.0, 5.0, 6.0])) == 1


def test_total_variation() -> None:
    ref = np.array([[10, 30, 60], [5, 5, 0]])
    cur = np.array([[20, 20, 60], [0, 0, 7]])
    assert total_variation_from_counts(ref, cur).tolist() == pytest.approx([0.1, 1.0])

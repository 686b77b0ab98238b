"""The pruned exact KS search against scipy.stats.ks_2samp on samples with ties, atoms and shifts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from control_plane.drift.ks_exact import KS_LARGE_N, KS_MIN_N, KS_STEPS, ks_sorted, ks_sorted_full

Maker = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]

SHAPES: dict[str, Maker] = {
    "continuous_small_shift": lambda rng, n1, n2: (rng.normal(size=n1), rng.normal(0.01, 1.0, n2)),
    "few_integers": lambda rng, n1, n2: (rng.integers(0, 5, n1) * 1.0, rng.integers(0, 6, n2) * 1.0),
    "rounded_to_0.1": lambda rng, n1, n2: (np.round(rng.normal(size=n1), 1), np.round(rng.normal(0.02, 1, n2), 1)),
    "rounded_to_0.01": lambda rng, n1, n2: (np.round(rng.normal(size=n1), 2), np.round(rng.normal(size=n2), 2)),
    "atom_at_zero": lambda rng, n1, n2: (
        np.where(rng.random(n1) < 0.3, 0.0, rng.exponential(size=n1)),
        np.where(rng.random(n2) < 0.33, 0.0, rng.exponential(size=n2)),
    ),
    "current_resampled_from_reference": lambda rng, n1, n2: (lambda a: (a, rng.choice(a, n2)))(rng.normal(size=n1)),
    "disjoint": lambda rng, n1, n2: (rng.normal(size=n1), rng.normal(5.0, 1.0, n2)),
    "constant_current": lambda rng, n1, n2: (rng.normal(size=n1), np.full(n2, 0.1)),
    "many_integers": lambda rng, n1, n2: (rng.integers(0, 400, n1) * 1.0, rng.integers(0, 401, n2) * 1.0),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("seed", range(4))
def test_pruned_search_equals_scipy(shape: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n1, n2 = int(rng.integers(KS_MIN_N, 20_000)), int(rng.integers(KS_MIN_N, 20_000))
    ref, cur = (np.sort(x) for x in SHAPES[shape](rng, n1, n2))
    expected = stats.ks_2samp(ref, cur).statistic
    assert ks_sorted(ref, cur) == pytest.approx(expected, abs=1e-12)
    assert ks_sorted(cur, ref) == pytest.approx(expected, abs=1e-12)
    for steps in ((512, 64, 8), (64, 8, 2), (32,)):
        assert ks_sorted(ref, cur, steps) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_pruned_search_equals_full_search_at_100k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.normal(size=100_000))
    cur = np.sort(rng.normal(0.003 * seed, 1.0, 90_000))
    assert ks_sorted(ref, cur) == ks_sorted_full(ref, cur)


def test_large_samples_use_three_levels_and_stay_exact() -> None:
    rng = np.random.default_rng(11)
    ref = np.sort(np.round(rng.normal(size=KS_LARGE_N), 3))
    cur = np.sort(np.round(rng.normal(0.002, 1.0, KS_LARGE_N // 2), 3))
    assert ks_sorted(ref, cur) == ks_sorted_full(ref, cur) == ks_sorted(ref, cur, KS_STEPS)


def test_small_samples_use_the_full_search() -> None:
    rng = np.random.default_rng(7)
    ref, cur = np.sort(rng.normal(size=KS_MIN_N - 1)), np.sort(rng.normal(size=50_000))
    assert ks_sorted(ref, cur) == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=1e-12)

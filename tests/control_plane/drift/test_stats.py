"""Drift statistics against scipy references on raw data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from control_plane.drift.stats import (
    DECILES,
    MAX_WORKERS,
    Band,
    RawNumericStats,
    adjust_pvalues,
    category_counts,
    chi2_goodness_of_fit_from_counts,
    chi2_homogeneity_from_counts,
    default_workers,
    jensen_shannon_from_counts,
    ks_from_counts,
    ks_pvalue,
    psi_band,
    psi_from_counts,
    raw_numeric_stats,
    sorted_quantiles,
)


def _samples(seed: int, n_ref: int, n_cur: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n_ref, 6))
    cur = rng.normal(0.1, 1.2, size=(n_cur, 6))
    ref[:, 1], cur[:, 1] = rng.integers(0, 5, n_ref), rng.integers(0, 6, n_cur)  # heavy ties
    ref[:, 2], cur[:, 2] = np.round(ref[:, 2], 1), np.round(cur[:, 2], 1)
    ref[:, 3], cur[:, 3] = rng.exponential(size=n_ref), rng.exponential(1.3, size=n_cur)
    cur[:, 4] = ref[:n_cur, 4] if n_cur <= n_ref else cur[:, 4]  # shared values across samples
    ref[:, 5] = 0.0  # constant reference column
    return ref, cur


@pytest.mark.parametrize(("n_ref", "n_cur"), [(200, 150), (3000, 2500), (12_000, 11_000), (40, 9000)])
def test_ks_matches_scipy_ks_2samp(n_ref: int, n_cur: int) -> None:
    ref, cur = _samples(n_ref + n_cur, n_ref, n_cur)
    raw = raw_numeric_stats(ref, cur, workers=2, block=2)
    p_values = ks_pvalue(raw.ks, raw.n_ref, raw.n_cur)
    for j in range(ref.shape[1]):
        expected = stats.ks_2samp(ref[:, j], cur[:, j])
        assert raw.ks[j] == pytest.approx(expected.statistic, abs=1e-12)
        assert p_values[j] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("seed", range(6))
def test_pruned_ks_search_is_exact_on_large_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_ref, n_cur = 30_000 + 977 * seed, 25_000 - 501 * seed
    same = rng.normal(size=(n_ref + n_cur, 2))
    ref = np.column_stack([same[:n_ref, 0], rng.integers(0, 9, n_ref), np.round(same[:n_ref, 1], 2)])
    cur = np.column_stack([same[n_ref:, 0] + 0.002 * seed, rng.integers(0, 9, n_cur), np.round(same[n_ref:, 1], 2)])
    raw = raw_numeric_stats(ref, cur)
    for j in range(3):
        assert raw.ks[j] == pytest.approx(stats.ks_2samp(ref[:, j], cur[:, j]).statistic, abs=1e-12)


@pytest.mark.parametrize("method", ["exact", "asymp"])
def test_ks_pvalue_methods_match_scipy(method: str) -> None:
    ref, cur = _samples(7, 500, 300)
    raw = raw_numeric_stats(ref, cur)
    p_values = ks_pvalue(raw.ks, raw.n_ref, raw.n_cur, method=method)  # type: ignore[arg-type]
    for j in range(ref.shape[1]):
        assert p_values[j] == pytest.approx(stats.ks_2samp(ref[:, j], cur[:, j], method=method).pvalue, rel=1e-9)


@pytest.mark.parametrize(("z", "rel"), [(0.8, 2e-3), (1.5, 2e-3), (2.5, 1e-2)])
def test_ks_pvalue_for_large_samples_stays_close_to_scipy_kstwo(z: float, rel: float) -> None:
    n1, n2 = 60_000, 40_000
    en = round(n1 * n2 / (n1 + n2))
    d = z / np.sqrt(en)
    fast = ks_pvalue(np.array([d]), np.array([n1]), np.array([n2]))[0]
    assert fast == pytest.approx(stats.kstwo.sf(d, en), rel=rel)
    assert ks_pvalue(np.array([d]), np.array([n1]), np.array([n2]), method="asymp")[0] == stats.kstwo.sf(d, en)


def test_nonfinite_values_are_excluded_and_counted() -> None:
    ref, cur = _samples(3, 800, 700)
    ref[::7, 0] = np.nan
    cur[::5, 0] = np.inf
    cur[1::9, 0] = -np.inf
    cur[2::11, 0] = np.nan
    raw = raw_numeric_stats(ref, cur)
    r, c = ref[:, 0], cur[:, 0]
    expected = stats.ks_2samp(r[np.isfinite(r)], c[np.isfinite(c)])
    assert raw.ks[0] == pytest.approx(expected.statistic, abs=1e-12)
    assert raw.nonfinite_ref[0] == np.sum(~np.isfinite(r))
    assert raw.nonfinite_cur[0] == np.sum(~np.isfinite(c))
    assert raw.n_cur[0] == np.sum(np.isfinite(c))


def _fields(raw: RawNumericStats) -> list[np.ndarray]:
    return [raw.ks, raw.n_ref, raw.n_cur, raw.nonfinite_ref, raw.nonfinite_cur, raw.ref_bins, raw.cur_bins]


@pytest.mark.parametrize(("workers", "block"), [(2, 1), (2, 3), (3, 8), (8, 2)])
def test_threads_and_blocks_give_identical_results(workers: int, block: int) -> None:
    # More rows than one copy slab (COPY_ROWS), a Fortran-ordered and an integer input, a column subset.
    ref, cur = _samples(21, 9_500, 8_700)
    ref[::13, 3] = np.nan
    columns = np.array([0, 1, 3, 4, 5])
    single = raw_numeric_stats(ref, cur, workers=1, columns=columns)
    for r, c in ((ref, cur), (np.asfortranarray(ref), cur), (ref, np.asfortranarray(cur))):
        threaded = raw_numeric_stats(r, c, workers=workers, block=block, columns=columns)
        for expected, got in zip(_fields(single), _fields(threaded), strict=True):
            assert np.array_equal(expected, got)
    as_int = raw_numeric_stats(ref[:, [1]].astype(np.int32), cur[:, [1]].astype(np.int64), workers=workers, block=block)
    assert as_int.ks[0] == single.ks[1]


def test_default_workers_is_capped() -> None:
    assert 1 <= default_workers() <= MAX_WORKERS


def test_all_nan_column_gives_no_statistic() -> None:
    ref = np.full((50, 1), np.nan)
    raw = raw_numeric_stats(ref, np.ones((40, 1)))
    assert raw.n_ref[0] == 0 and raw.ks[0] == 0.0


def test_wasserstein_matches_scipy() -> None:
    ref, cur = _samples(11, 2000, 1500)
    raw = raw_numeric_stats(ref, cur, wasserstein=True)
    assert raw.wasserstein is not None
    for j in range(ref.shape[1]):
        assert raw.wasserstein[j] == pytest.approx(stats.wasserstein_distance(ref[:, j], cur[:, j]), rel=1e-10)


def test_decile_bins_match_numpy_quantiles() -> None:
    ref, cur = _samples(5, 1000, 900)
    raw = raw_numeric_stats(ref, cur)
    edges = np.quantile(ref[:, 0], DECILES)
    assert np.array_equal(sorted_quantiles(np.sort(ref[:, 0]), DECILES), edges)
    cur_expected = np.bincount(np.searchsorted(edges, cur[:, 0], side="right"), minlength=10)
    assert raw.cur_bins[0].tolist() == cur_expected.tolist()
    assert raw.ref_bins[0].tolist() == [100] * 10
    # Tied deciles collapse: the integer column keeps only distinct edges, padded with zeros.
    assert raw.ref_bins[1].sum() == 1000 and (raw.ref_bins[1] > 0).sum() <= 5


def test_psi_against_hand_computed_value() -> None:
    ref = np.array([[25, 25, 25, 25]])
    cur = np.array([[10, 20, 30, 40]])
    p, q = np.full(4, 0.25), np.array([0.1, 0.2, 0.3, 0.4])
    hand = sum((qi - pi) * np.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert psi_from_counts(ref, cur)[0] == pytest.approx(hand, rel=1e-12)
    # 0.15 ln 2.5 + 0.05 ln 1.25 + 0.05 ln 1.2 + 0.15 ln 1.6, worked out on paper
    assert psi_from_counts(ref, cur)[0] == pytest.approx(0.228217409573, abs=1e-12)


def test_psi_epsilon_for_empty_bins() -> None:
    psi = psi_from_counts(np.array([[50, 50, 0]]), np.array([[40, 40, 20]]))[0]
    hand = 2 * (0.4 - 0.5) * np.log(0.4 / 0.5) + (0.2 - 1e-4) * np.log(0.2 / 1e-4)
    assert psi == pytest.approx(hand, rel=1e-12)
    assert psi_from_counts(np.array([[5, 5, 0]]), np.array([[5, 5, 0]]))[0] == 0.0


def test_psi_bands() -> None:
    assert [psi_band(v) for v in (0.0, 0.0999, 0.10, 0.2499, 0.25, 3.0)] == [
        Band.STABLE,
        Band.STABLE,
        Band.MODERATE,
        Band.MODERATE,
        Band.MAJOR,
        Band.MAJOR,
    ]


def test_chi2_homogeneity_matches_chi2_contingency() -> None:
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 200, size=(20, 8))
    cur = rng.integers(0, 200, size=(20, 8))
    ref[3, 2] = cur[3, 2] = 0  # a bin empty in both samples is not a cell
    statistic, dof, p_value = chi2_homogeneity_from_counts(ref, cur)
    for i in range(20):
        table = np.vstack([ref[i], cur[i]])
        table = table[:, table.sum(axis=0) > 0]
        expected = stats.chi2_contingency(table, correction=False)
        assert statistic[i] == pytest.approx(expected.statistic, rel=1e-10)
        assert p_value[i] == pytest.approx(expected.pvalue, rel=1e-9)
        assert dof[i] == expected.dof


def test_chi2_goodness_of_fit_matches_chisquare() -> None:
    rng = np.random.default_rng(4)
    ref = rng.integers(1, 300, size=(10, 6))
    cur = rng.integers(0, 300, size=(10, 6))
    statistic, dof, p_value = chi2_goodness_of_fit_from_counts(ref, cur)
    for i in range(10):
        f_exp = ref[i] / ref[i].sum() * cur[i].sum()
        expected = stats.chisquare(cur[i], f_exp)
        assert statistic[i] == pytest.approx(expected.statistic, rel=1e-10)
        assert p_value[i] == pytest.approx(expected.pvalue, rel=1e-9)
        assert dof[i] == 5


def test_categorical_counts_and_chi2_on_raw_strings() -> None:
    ref = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    cur = np.array(["a"] * 30 + ["b"] * 30 + ["d"] * 40)
    vocabulary, ref_counts, cur_counts = category_counts(ref, cur)
    assert vocabulary.tolist() == ["a", "b", "c", "d"]
    assert ref_counts.tolist() == [50, 30, 20, 0] and cur_counts.tolist() == [30, 30, 0, 40]
    statistic, _, p_value = chi2_homogeneity_from_counts(ref_counts[None], cur_counts[None])
    expected = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    assert statistic[0] == pytest.approx(expected.statistic) and p_value[0] == pytest.approx(expected.pvalue)


def test_jensen_shannon_matches_scipy() -> None:
    rng = np.random.default_rng(9)
    ref = rng.integers(0, 50, size=(15, 10))
    cur = rng.integers(0, 50, size=(15, 10))
    cur[0, :5] = 0
    distances = jensen_shannon_from_counts(ref, cur)
    for i in range(15):
        assert distances[i] == pytest.approx(jensenshannon(ref[i], cur[i], base=2), rel=1e-10, abs=1e-12)
    assert jensen_shannon_from_counts(ref[:1], ref[:1])[0] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_ks_brackets_exact_ks_within_stated_resolution(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=5000)
    cur = rng.normal(0.05 * seed, 1 + 0.1 * seed, size=3000)
    edges = np.unique(np.quantile(ref, np.arange(1, 100) / 100))
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    lower, upper = ks_from_counts(ref_counts[None], cur_counts[None])
    exact = stats.ks_2samp(ref, cur).statistic
    max_mass = max((ref_counts / ref.size).max(), (cur_counts / cur.size).max())
    assert lower[0] <= exact + 1e-12 <= upper[0] + 2e-12
    assert upper[0] - lower[0] <= max_mass + 1e-12
    assert exact - lower[0] <= max_mass


def test_adjust_pvalues_matches_scipy_fdr_and_bonferroni() -> None:
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=10)])
    assert np.allclose(adjust_pvalues(p, "bh"), stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    assert np.allclose(adjust_pvalues(p, "bonferroni"), np.minimum(p * p.size, 1.0))
    assert np.array_equal(adjust_pvalues(p, "none"), p)


def test_adjust_pvalues_ignores_untested_features() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03])
    adjusted = adjust_pvalues(p, "bh")
    assert np.isnan(adjusted[1])
    assert np.allclose(adjusted[[0, 2, 3]], stats.false_discovery_control(p[[0, 2, 3]]))


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        raw_numeric_stats(np.zeros((10, 3)), np.zeros((10, 4)))

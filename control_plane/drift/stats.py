"""Drift statistics, vectorised across features: PSI, KS, chi-squared, Jensen-Shannon, Wasserstein-1.

Count-based functions take arrays shaped (features, bins) and work the same on exact decile counts and
on merged telemetry sketches. Raw-sample functions take (rows, features) matrices, sort each column once
and derive every statistic from the sorted columns.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy import special, stats

from control_plane.drift.effects import outside_sorted
from control_plane.drift.ks_exact import ks_sorted

PSI_MODERATE = 0.10
PSI_MAJOR = 0.25
PSI_EPSILON = 1e-4  # replaces an empty bin's proportion so ln(q/p) stays finite
KS_EXACT_MAX_N = 10_000  # same switch as scipy.stats.ks_2samp(method="auto")
# scipy's kstwo.sf costs O(n) (about 1 s per feature at n = 200k); above this effective size "auto" uses the
# Kolmogorov limit with Stephens' finite-n correction (measured relative error < 0.2 % at p >= 0.02, < 1 %
# at p ~ 1e-5).
KS_KSTWO_MAX_EN = 10_000
DECILES = np.arange(1, 10) / 10.0
MAX_WORKERS = 8  # default thread cap of exact mode; past a few threads memory bandwidth limits the sorts
COPY_ROWS = 4096  # rows per slab of the transposing copy

KsMethod = Literal["auto", "exact", "asymp"]


class Band(StrEnum):
    """PSI severity band."""

    STABLE = "stable"  # psi < 0.10
    MODERATE = "moderate"  # 0.10 <= psi < 0.25
    MAJOR = "major"  # psi >= 0.25


def psi_band(value: float) -> Band:
    """Return the PSI band of one value."""
    if value >= PSI_MAJOR:
        return Band.MAJOR
    if value >= PSI_MODERATE:
        return Band.MODERATE
    return Band.STABLE


def _proportions(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), 0.0)


def psi_from_counts(reference: np.ndarray, current: np.ndarray, *, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """Return PSI = sum((q - p) * ln(q / p)) per row; empty-bin proportions become `epsilon`."""
    p = _proportions(np.asarray(reference, dtype=np.float64))
    q = _proportions(np.asarray(current, dtype=np.float64))
    p = np.where(p > 0, p, epsilon)
    q = np.where(q > 0, q, epsilon)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def chi2_homogeneity_from_counts(
    reference: np.ndarray, current: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (statistic, dof, p-value) of the 2 x K contingency test per row, no Yates correction.

    Bins empty in both samples are left out (they add no cell and no degree of freedom).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    col = ref + cur
    n_ref = ref.sum(axis=-1, keepdims=True)
    n_cur = cur.sum(axis=-1, keepdims=True)
    total = n_ref + n_cur
    used = col > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        exp_ref = col * n_ref / total
        exp_cur = col * n_cur / total
        cells = np.where(used, (ref - exp_ref) ** 2 / exp_ref + (cur - exp_cur) ** 2 / exp_cur, 0.0)
    statistic = np.nan_to_num(cells).sum(axis=-1)
    dof = used.sum(axis=-1) - 1
    p_value = np.where(dof > 0, stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    return statistic, dof, p_value


def chi2_goodness_of_fit_from_counts(
    reference: np.ndarray, current: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (statistic, dof, p-value) of current counts against reference proportions per row.

    A bin the reference never saw but the current window fills makes the statistic infinite.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    expected = _proportions(ref) * cur.sum(axis=-1, keepdims=True)
    used = (expected > 0) | (cur > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = np.where(used, (cur - expected) ** 2 / expected, 0.0)
    statistic = cells.sum(axis=-1)
    dof = used.sum(axis=-1) - 1
    p_value = np.where(dof > 0, stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    return statistic, dof, p_value


def jensen_shannon_from_counts(reference: np.ndarray, current: np.ndarray, *, base: float = 2.0) -> np.ndarray:
    """Return the Jensen-Shannon distance (sqrt of the divergence, like scipy) per row."""
    p = _proportions(np.asarray(reference, dtype=np.float64))
    q = _proportions(np.asarray(current, dtype=np.float64))
    m = (p + q) / 2.0
    divergence = (special.rel_entr(p, m).sum(axis=-1) + special.rel_entr(q, m).sum(axis=-1)) / 2.0
    return np.sqrt(np.maximum(divergence, 0.0) / math.log(base))


def ks_from_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (D on the bin edges, upper bound of the exact D) from counts on a shared grid.

    D at the edges is a lower bound of the raw-data statistic; inside bin b the ECDFs can move apart by
    at most that bin's mass, so the exact D lies in [lower, upper] with upper - lower <= max bin mass.
    """
    f1 = np.cumsum(_proportions(np.asarray(reference, dtype=np.float64)), axis=-1)
    f2 = np.cumsum(_proportions(np.asarray(current, dtype=np.float64)), axis=-1)
    zeros = np.zeros((*f1.shape[:-1], 1))
    f1_prev = np.concatenate([zeros, f1[..., :-1]], axis=-1)
    f2_prev = np.concatenate([zeros, f2[..., :-1]], axis=-1)
    lower = np.abs(f1 - f2).max(axis=-1)
    upper = np.maximum(np.abs(f1 - f2_prev), np.abs(f1_prev - f2)).max(axis=-1)
    return np.clip(lower, 0.0, 1.0), np.clip(np.maximum(upper, lower), 0.0, 1.0)


def ks_pvalue(d: np.ndarray, n_ref: np.ndarray, n_cur: np.ndarray, *, method: KsMethod = "auto") -> np.ndarray:
    """Return two-sided KS p-values for arrays of D and sample sizes.

    "exact" and "asymp" are scipy.stats.ks_2samp's methods. "auto" is scipy's auto (exact when both
    samples have at most 10,000 values, else kstwo) except that for an effective size
    en = n1 n2 / (n1 + n2) above KS_KSTWO_MAX_EN it uses kstwobign.sf(d (sqrt(en) + 0.12 + 0.11 / sqrt(en))).
    """
    d = np.asarray(d, dtype=np.float64)
    n1 = np.asarray(n_ref, dtype=np.int64)
    n2 = np.asarray(n_cur, dtype=np.int64)
    d, n1, n2 = np.broadcast_arrays(d, n1, n2)
    p = np.ones(d.shape)
    valid = (n1 > 0) & (n2 > 0)
    en = np.round(n1 * n2 / np.maximum(n1 + n2, 1).astype(np.float64))
    if method == "auto":
        exact = valid & (np.maximum(n1, n2) <= KS_EXACT_MAX_N)
        limit = valid & ~exact & (en > KS_KSTWO_MAX_EN)
    else:
        exact = valid & (method == "exact")
        limit = np.zeros(d.shape, dtype=bool)
    asymp = valid & ~exact & ~limit
    if asymp.any():
        p[asymp] = stats.kstwo.sf(d[asymp], en[asymp])
    if limit.any():
        root = np.sqrt(en[limit])
        p[limit] = stats.kstwobign.sf(d[limit] * (root + 0.12 + 0.11 / root))
    for i in np.flatnonzero(exact):
        p.flat[i] = _exact_ks_pvalue(float(d.flat[i]), int(n1.flat[i]), int(n2.flat[i]), float(en.flat[i]))
    return np.clip(p, 0.0, 1.0)


def ks_limit_pvalue(d: np.ndarray, n_ref: np.ndarray, n_cur: np.ndarray) -> np.ndarray:
    """Return `kstwobign.sf(d (sqrt(en) + 0.12 + 0.11 / sqrt(en)))`, the Stephens-corrected Kolmogorov limit.

    What "auto" uses above en = 10,000, here for every size: vectorised, microseconds per feature.
    """
    d, n1, n2 = np.broadcast_arrays(np.asarray(d, dtype=np.float64), np.asarray(n_ref, dtype=np.float64),
                                    np.asarray(n_cur, dtype=np.float64))
    p = np.ones(d.shape)
    valid = (n1 > 0) & (n2 > 0)
    root = np.sqrt(n1[valid] * n2[valid] / (n1[valid] + n2[valid]))
    p[valid] = stats.kstwobign.sf(d[valid] * (root + 0.12 + 0.11 / root))
    return np.clip(p, 0.0, 1.0)


def _exact_ks_pvalue(d: float, n1: int, n2: int, en: float) -> float:
    # scipy's exact two-sample distribution is private; fall back to its asymptotic formula if it moves.
    exact = getattr(getattr(stats, "_stats_py", None), "_attempt_exact_2kssamp", None)
    if exact is not None:
        success, _, prob = exact(n1, n2, math.gcd(n1, n2), d, "two-sided")
        if success:
            return float(prob)
    return float(stats.kstwo.sf(d, en))


def adjust_pvalues(p_values: np.ndarray, method: Literal["bh", "bonferroni", "none"]) -> np.ndarray:
    """Return p-values adjusted for testing all given features (NaN entries are not tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    if m == 0 or method == "none":
        out[tested] = p[tested]
        return out
    if method == "bonferroni":
        out[tested] = np.minimum(p[tested] * m, 1.0)
        return out
    sub = p[tested]
    order = np.argsort(sub)
    scaled = sub[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    result = np.empty(m)
    result[order] = adjusted
    out[tested] = result
    return out


@dataclass(frozen=True)
class RawNumericStats:
    """Per-feature statistics computed from raw numeric samples (arrays of length F)."""

    ks: np.ndarray
    n_ref: np.ndarray
    n_cur: np.ndarray
    nonfinite_ref: np.ndarray
    nonfinite_cur: np.ndarray
    ref_bins: np.ndarray  # (F, B) counts on the reference-quantile bins (decile default), zero-padded
    cur_bins: np.ndarray
    wasserstein: np.ndarray | None
    outside: np.ndarray  # current values strictly outside the reference's [min, max]


def sorted_quantiles(sorted_values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Return np.quantile(..., method="linear") of an already sorted 1D array without re-sorting."""
    n = sorted_values.size
    virtual = q * (n - 1)
    below = np.floor(virtual).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    t = virtual - below
    a, b = sorted_values[below], sorted_values[above]
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _wasserstein_sorted(ref: np.ndarray, cur: np.ndarray) -> float:
    pooled = np.sort(np.concatenate([ref, cur]), kind="stable")
    deltas = np.diff(pooled)
    f1 = np.searchsorted(ref, pooled[:-1], side="right") / ref.size
    f2 = np.searchsorted(cur, pooled[:-1], side="right") / cur.size
    return float(np.sum(np.abs(f1 - f2) * deltas))


def _finite_slice(sorted_row: np.ndarray) -> np.ndarray:
    # np.sort orders -inf < finite < +inf < nan, so the finite values are one contiguous run.
    lo = np.searchsorted(sorted_row, -np.inf, side="right")
    hi = np.searchsorted(sorted_row, np.inf, side="left")
    return sorted_row[lo:hi]


def _sorted_columns(columns: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """Copy (rows x k) columns into the first k rows of `buffer` as float64 and sort each row in place."""
    block = buffer[: columns.shape[1], : columns.shape[0]]
    # Transposing in slabs of COPY_ROWS rows keeps the source cache lines in L2 while all k columns use them;
    # unsafe casting is what np.array(x, dtype=float64) did.
    for start in range(0, columns.shape[0], COPY_ROWS):
        stop = start + COPY_ROWS
        np.copyto(block[:, start:stop], columns[start:stop].T, casting="unsafe")
    block.sort(axis=1)
    return block


ColumnStats = tuple[float, int, int, int, int, np.ndarray, np.ndarray, float, int]


def _column_block(
    ref_block: np.ndarray, cur_block: np.ndarray, quantiles: np.ndarray, wasserstein: bool
) -> list[ColumnStats]:
    rows: list[ColumnStats] = []
    for ref_row, cur_row in zip(ref_block, cur_block, strict=True):
        r, c = _finite_slice(ref_row), _finite_slice(cur_row)
        if r.size == 0 or c.size == 0:
            empty = np.zeros(quantiles.size + 1)
            rows.append((0.0, r.size, c.size, ref_row.size - r.size, cur_row.size - c.size, empty, empty, 0.0, 0))
            continue
        edges = np.unique(sorted_quantiles(r, quantiles))
        bounds_r = np.concatenate([[0], np.searchsorted(r, edges, side="left"), [r.size]])
        bounds_c = np.concatenate([[0], np.searchsorted(c, edges, side="left"), [c.size]])
        w = _wasserstein_sorted(r, c) if wasserstein else float("nan")
        rows.append(
            (
                ks_sorted(r, c),
                r.size,
                c.size,
                ref_row.size - r.size,
                cur_row.size - c.size,
                np.diff(bounds_r),
                np.diff(bounds_c),
                w,
                outside_sorted(r, c),
            )
        )
    return rows


def default_workers() -> int:
    """Return the thread count exact mode uses when none is given: usable CPUs, at most MAX_WORKERS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_WORKERS))


def raw_numeric_stats(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    quantiles: np.ndarray = DECILES,
    wasserstein: bool = False,
    workers: int | None = None,
    block: int = 8,
    columns: np.ndarray | None = None,
) -> RawNumericStats:
    """Sort each column of both (rows x features) matrices once and derive KS, bin counts, W1.

    Non-finite values are left out of every statistic and counted. Bins are cut at the reference's
    quantiles (deciles by default; ties collapse bins). Blocks of `block` columns run on `workers` threads
    (default `default_workers()`; 1 runs everything in the calling thread): numpy's copy, sort and
    searchsorted release the GIL. The result does not depend on `workers` or `block`.
    """
    ref = np.asarray(reference)
    cur = np.asarray(current)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError("reference and current must be 2D with the same number of columns")
    # `columns` selects features without copying the whole matrices (each block copies its own columns).
    selected = np.arange(ref.shape[1]) if columns is None else np.asarray(columns, dtype=np.int64)
    n_features = selected.size
    starts = list(range(0, n_features, block))
    pool_size = max(1, min(workers or default_workers(), len(starts)))
    # One pair of sort buffers per thread, reused by its blocks: fresh multi-megabyte arrays per block
    # cost page faults comparable to the copy itself.
    local = threading.local()

    def run(start: int) -> list[ColumnStats]:
        chunk = selected[start : start + block]
        step = chunk[-1] - chunk[0] + 1 if chunk.size else 0
        # A contiguous run of columns is a basic slice (a view); anything else is gathered.
        index: slice | np.ndarray = slice(chunk[0], chunk[0] + step) if step == chunk.size else chunk
        if not hasattr(local, "buffers"):
            local.buffers = (np.empty((block, ref.shape[0])), np.empty((block, cur.shape[0])))
        ref_block = _sorted_columns(ref[:, index], local.buffers[0])
        cur_block = _sorted_columns(cur[:, index], local.buffers[1])
        return _column_block(ref_block, cur_block, quantiles, wasserstein)

    if pool_size == 1:
        rows = [row for start in starts for row in run(start)]
    else:
        with ThreadPoolExecutor(max_workers=pool_size) as pool:
            rows = [row for chunk in pool.map(run, starts) for row in chunk]
    width = quantiles.size + 1
    ref_bins = np.zeros((n_features, width), dtype=np.int64)
    cur_bins = np.zeros((n_features, width), dtype=np.int64)
    for i, row in enumerate(rows):
        ref_bins[i, : row[5].size] = row[5]
        cur_bins[i, : row[6].size] = row[6]
    return RawNumericStats(
        ks=np.array([row[0] for row in rows]),
        n_ref=np.array([row[1] for row in rows], dtype=np.int64),
        n_cur=np.array([row[2] for row in rows], dtype=np.int64),
        nonfinite_ref=np.array([row[3] for row in rows], dtype=np.int64),
        nonfinite_cur=np.array([row[4] for row in rows], dtype=np.int64),
        ref_bins=ref_bins,
        cur_bins=cur_bins,
        wasserstein=np.array([row[7] for row in rows]) if wasserstein else None,
        outside=np.array([row[8] for row in rows], dtype=np.int64),
    )


def category_counts(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (union vocabulary, reference counts, current counts) of two raw categorical columns."""
    ref = np.asarray(reference)
    cur = np.asarray(current)
    if ref.dtype.kind == "f":
        ref = ref[np.isfinite(ref)]
    if cur.dtype.kind == "f":
        cur = cur[np.isfinite(cur)]
    vocabulary, inverse = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    ref_counts = np.bincount(inverse[: ref.size], minlength=vocabulary.size)
    cur_counts = np.bincount(inverse[ref.size :], minlength=vocabulary.size)
    return vocabulary, ref_counts, cur_counts

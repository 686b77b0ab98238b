"""Practical effect sizes and the out-of-range test that the drift decision combines with significance.

- Total variation distance `TVD = sum |p - q| / 2` of categorical proportions: the largest difference in the
  probability of any set of categories, the categorical counterpart of the KS D (which is the largest
  difference over half-lines); both lie in [0, 1] and share one floor.
- The out-of-range test: how many current values fall strictly outside the reference's observed
  [min, max]. Under "same continuous distribution" the reference range covers a share U ~ Beta(n_ref - 1, 2)
  of the mass, so the count K of n_cur current values outside it is beta-binomial(n_cur, 2, n_ref - 1), with
  the closed-form tail below. Ties (atoms, a constant feature) only make values outside rarer, so the
  p-value stays valid (conservative) for any distribution.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def total_variation_from_counts(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Return the total variation distance between the two count vectors' proportions, per row."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = ref / ref.sum(axis=-1, keepdims=True)
        q = cur / cur.sum(axis=-1, keepdims=True)
    return np.nan_to_num(np.abs(p - q).sum(axis=-1) / 2.0)


def _log_binomial(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return special.gammaln(n + 1.0) - special.gammaln(k + 1.0) - special.gammaln(n - k + 1.0)


def range_pvalue(outside: np.ndarray, n_ref: np.ndarray, n_cur: np.ndarray) -> np.ndarray:
    """Return P(K >= outside) for K current values outside the range of n_ref reference values, per feature.

    `P(K >= k) = ((k + 1) C(N - k - 1, n_ref - 1) + C(N - k - 1, n_ref)) / C(N, n_ref)` with
    `N = n_ref + n_cur` (summing `P(K = j) = (j + 1) C(N - j - 2, n_ref - 2) / C(N, n_ref)` by the
    hockey-stick identity); equal to `scipy.stats.betabinom.sf(k - 1, n_cur, 2, n_ref - 1)`. 1 where
    k = 0 or where n_ref < 2 (no range to speak of).
    """
    k, m, n = np.broadcast_arrays(np.asarray(outside, dtype=np.float64), np.asarray(n_ref, dtype=np.float64),
                                  np.asarray(n_cur, dtype=np.float64))
    p = np.ones(k.shape)
    valid = (k > 0) & (m >= 2) & (n >= k)
    if not valid.any():
        return p
    k, m, n = k[valid], m[valid], n[valid]
    total = m + n
    rest = total - k - 1.0
    log_all = _log_binomial(total, m)
    first = np.exp(np.log(k + 1.0) + _log_binomial(rest, m - 1.0) - log_all)
    second = np.where(rest >= m, np.exp(_log_binomial(np.maximum(rest, m), m) - log_all), 0.0)
    p[valid] = np.clip(first + second, 0.0, 1.0)
    return p


def outside_sorted(reference: np.ndarray, current: np.ndarray) -> int:
    """Count current values strictly below the reference minimum or above its maximum (both sorted, finite)."""
    if reference.size == 0 or current.size == 0:
        return 0
    below = int(np.searchsorted(current, reference[0], side="left"))
    above = int(current.size - np.searchsorted(current, reference[-1], side="right"))
    return below + above

"""Statistics of shadow comparisons: Wilson intervals for proportions, quantile bounds from fixed histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A point estimate with the bounds of its confidence interval (None when there is no data)."""

    estimate: float | None
    lower: float | None
    upper: float | None


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Return the Wilson score interval of successes/trials (sound near 0 and 1, unlike the normal one)."""
    if trials <= 0:
        return Interval(None, None, None)
    if not 0 <= successes <= trials:
        raise ValueError("successes must be within 0..trials")
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # Exact at the edges: the closed form can land a hair inside 0 or 1 through rounding.
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(p, lower, upper)


def quantile_bounds(counts: Sequence[int], edges: Sequence[float], q: float,
                    confidence: float = 0.95) -> Interval:
    """Bound the q-quantile of the values a histogram counted (bucket i holds edges[i-1] < v <= edges[i]).

    `estimate` is the upper edge of the bucket holding the q-quantile of the counted values (an upper bound for
    it: the histogram cannot say more). `lower`/`upper` also cover sampling: the ranks a binomial order-statistic
    interval allows at `confidence`, widened to their buckets' edges. The last bucket is open, so its upper edge
    is infinite: a p95 there is honestly "more than the largest edge".
    """
    values = np.asarray(counts, dtype=np.int64)
    if not 0.0 < q < 1.0 or len(values) != len(edges) + 1:
        raise ValueError("q must be in (0, 1) and counts one longer than edges")
    total = int(values.sum())
    if total <= 0:
        return Interval(None, None, None)
    upper_edges = [*map(float, edges), math.inf]
    lower_edges = [0.0, *map(float, edges)]
    cumulative = np.cumsum(values)

    def bucket(rank: int) -> int:  # the bucket of the rank-th smallest value (1-based)
        return int(np.searchsorted(cumulative, min(max(rank, 1), total), side="left"))

    alpha = 1.0 - confidence
    low_rank = int(stats.binom.ppf(alpha / 2.0, total, q))
    high_rank = int(stats.binom.ppf(1.0 - alpha / 2.0, total, q)) + 1
    return Interval(upper_edges[bucket(math.ceil(q * total))], lower_edges[bucket(low_rank)],
                    upper_edges[bucket(high_rank)])


def merge(histograms: Sequence[Sequence[int]], length: int) -> list[int]:
    """Return the element-wise sum of equal-length count lists (an empty list of them gives zeros)."""
    total = np.zeros(length, dtype=np.int64)
    for histogram in histograms:
        total += np.asarray(histogram, dtype=np.int64)
    return [int(v) for v in total]

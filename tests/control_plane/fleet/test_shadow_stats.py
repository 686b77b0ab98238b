"""Shadow statistics: Wilson intervals agree with scipy's, histogram quantile bounds hold the true quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from control_plane.fleet.schemas import Strategy
from control_plane.fleet.shadow_stats import merge, quantile_bounds, wilson
from control_plane.telemetry.shadow import LATENCY_BUCKETS_MS


@pytest.mark.parametrize(("k", "n", "confidence"), [(81, 100, 0.95), (0, 20, 0.95), (20, 20, 0.9), (997, 1000, 0.99),
                                                     (1, 3, 0.95)])
def test_wilson_matches_scipy(k: int, n: int, confidence: float) -> None:
    ours = wilson(k, n, confidence)
    reference = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ours.estimate == k / n
    assert ours.lower == pytest.approx(reference.low, abs=1e-9)
    assert ours.upper == pytest.approx(reference.high, abs=1e-9)


def test_wilson_without_data_or_with_impossible_counts() -> None:
    assert wilson(0, 0).estimate is None
    with pytest.raises(ValueError):
        wilson(5, 3)


def test_quantile_bounds_hold_the_true_quantile_of_the_counted_values() -> None:
    edges = np.asarray(LATENCY_BUCKETS_MS)
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.lognormal(mean=rng.uniform(-2, 3), sigma=rng.uniform(0.2, 1.5), size=int(rng.integers(30, 3000)))
        counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
        for q in (0.5, 0.95):
            bounds = quantile_bounds(counts.tolist(), LATENCY_BUCKETS_MS, q)
            true = float(np.quantile(values, q, method="inverted_cdf"))
            assert bounds.lower is not None and bounds.upper is not None and bounds.estimate is not None
            assert bounds.lower <= true <= bounds.estimate <= bounds.upper


def test_quantile_bounds_are_open_ended_beyond_the_last_edge_and_empty_without_data() -> None:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[-1] = 50
    slow = quantile_bounds(counts, LATENCY_BUCKETS_MS, 0.95)
    assert slow.estimate == math.inf and slow.lower == LATENCY_BUCKETS_MS[-1]
    assert quantile_bounds([0] * len(counts), LATENCY_BUCKETS_MS, 0.5).estimate is None
    with pytest.raises(ValueError):
        quantile_bounds(counts[:-1], LATENCY_BUCKETS_MS, 0.5)
    assert merge([[1, 2], [3, 4]], 2) == [4, 6] and merge([], 3) == [0, 0, 0]


def test_shadow_strategy_defaults_and_bounds() -> None:
    strategy = Strategy.model_validate({"kind": "shadow"})
    assert strategy.shadow is not None and strategy.shadow.sample_rate == 0.1
    assert strategy.gate is not None and strategy.gate.min_windows == 3 and strategy.then_waves == [10, 50, 100]
    for bad in ({"shadow": {"sample_rate": 0}}, {"shadow": {"sample_rate": 1.5}},
                {"shadow": {"sample_rate": float("nan")}}, {"shadow": {"max_latency_ms": float("inf")}},
                {"shadow": {"max_latency_ms": 1e300}}, {"shadow": {"extra": 1}}, {"gate": {"min_agreement": 1.01}},
                {"gate": {"min_windows": 0}}, {"gate": {"min_windows": 2**64}}, {"gate": {"confidence": 1.0}},
                {"gate": {"max_wait_s": -1}}, {"then_waves": [50, 10]}, {"then_waves": [10, 50]},
                {"then_waves": [0, 100]}, {"then_waves": [1.0] * 101}):
        with pytest.raises(ValidationError):
            Strategy.model_validate({"kind": "shadow", **bad})
    with pytest.raises(ValidationError):  # shadow settings on another strategy are a mistake, not ignored
        Strategy.model_validate({"kind": "all_at_once", "gate": {}})

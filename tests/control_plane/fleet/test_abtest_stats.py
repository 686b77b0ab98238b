"""A/B statistics against published values and scipy: hashing, intervals, tests, sample size, the decision rule."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from control_plane.fleet.abtest_schemas import ExperimentDesign
from control_plane.fleet.abtest_stats import (
    ArmCounts,
    arm_of,
    assign,
    bucket,
    decide,
    newcombe_interval,
    prediction_test,
    required_per_arm,
    two_proportion_test,
    wilson_interval,
)


def test_hash_is_stable_and_independent_of_device_order() -> None:
    devices = [f"dev-{i:04d}" for i in range(500)]
    first = assign("exp_1", devices, [0.5, 0.5])
    shuffled = devices[:]
    random.Random(3).shuffle(shuffled)
    assert assign("exp_1", shuffled, [0.5, 0.5]) == first
    # Fixed value: the same experiment and device land in the same place in any process, on any replica.
    assert bucket("exp_1", "dev-0000") == int.from_bytes(
        __import__("hashlib").sha256(b"exp_1:dev-0000").digest()[:8], "big") / 2**64
    # A device's arm depends on the experiment too: another experiment reshuffles the group.
    other = assign("exp_2", devices, [0.5, 0.5])
    assert sum(first[d][0] != other[d][0] for d in devices) > 150


def test_hash_split_is_balanced_to_the_weights() -> None:
    devices = [f"cam-{i}" for i in range(20_000)]
    weights = [0.2, 0.3, 0.5]
    arms = np.bincount([arm for arm, _ in assign("exp_balance", devices, weights).values()], minlength=3)
    # Chi-square goodness of fit to the weights: a biased hash would fail this at p < 0.001.
    assert stats.chisquare(arms, np.array(weights) * len(devices)).pvalue > 0.001
    positions = [bucket("exp_balance", d) for d in devices[:5000]]
    assert stats.kstest(positions, "uniform").pvalue > 0.001


def test_arm_of_uses_cumulative_weights_and_the_last_arm_absorbs_rounding() -> None:
    assert [arm_of(p, [0.25, 0.25, 0.5]) for p in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.9999999)] == [0, 0, 1, 1, 2, 2]
    assert arm_of(0.99999999999, [0.1, 0.2, 0.3, 0.4 - 1e-9]) == 3


def test_sample_size_matches_published_values() -> None:
    # 20% vs 30%, two-sided alpha 0.05, power 0.8: 294 per group (Fleiss, no continuity correction).
    assert required_per_arm(0.2, 0.1, 0.05, 0.8) == 294
    # Symmetric under p -> 1 - p: 70% vs 80% needs the same n.
    assert required_per_arm(0.7, 0.1, 0.05, 0.8) == 294
    # Near 1 the alternative goes down: 0.95 vs 0.90.
    assert required_per_arm(0.95, 0.05, 0.05, 0.8) == required_per_arm(0.90, 0.05, 0.05, 0.8) == 435
    # More power, smaller alpha and a smaller effect each need more samples.
    base = required_per_arm(0.5, 0.1, 0.05, 0.8)
    assert base == 388  # 0.5 vs 0.6
    assert required_per_arm(0.5, 0.1, 0.05, 0.9) > base and required_per_arm(0.5, 0.1, 0.01, 0.8) > base
    assert required_per_arm(0.5, 0.05, 0.05, 0.8) > 3.5 * base


def test_intervals_match_newcombe_1998() -> None:
    low, high = wilson_interval(81, 263)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(0, 10)  # type: ignore[misc]
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = newcombe_interval(48, 80, 56, 70)  # type: ignore[misc]  # 56/70 - 48/80 = 0.2
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    assert wilson_interval(0, 0) is None and newcombe_interval(1, 2, 0, 0) is None


def test_two_proportion_test_agrees_with_scipy_and_falls_back_to_fisher() -> None:
    result = two_proportion_test(80, 100, 90, 100)
    assert result is not None and result.method == "two_proportion_z"
    chi2 = stats.chi2_contingency([[80, 20], [90, 10]], correction=False)
    assert result.p_value == pytest.approx(chi2.pvalue, rel=1e-9)
    assert result.statistic is not None and result.statistic**2 == pytest.approx(chi2.statistic, rel=1e-9)
    # Fisher's lady tasting tea: 3 of 4 vs 1 of 4, two-sided p = 0.4857.
    small = two_proportion_test(1, 4, 3, 4)
    assert small is not None and small.method == "fisher_exact" and round(small.p_value, 4) == 0.4857
    assert two_proportion_test(0, 0, 1, 1) is None


def test_prediction_distribution_chi_square() -> None:
    result = prediction_test([{"1": 10, "2": 20}, {"1": 20, "2": 10, "3": 0}])
    assert result is not None and result.classes == ["1", "2"] and result.dof == 1
    assert result.p_value == pytest.approx(stats.chi2_contingency([[10, 20], [20, 10]], correction=False).pvalue)
    assert prediction_test([{"1": 5}, {}]) is None  # one arm predicted nothing yet


def test_decision_waits_for_the_horizon_then_needs_significance() -> None:
    required = 100
    early = decide([ArmCounts(50, 25, 50), ArmCounts(50, 50, 50)], required=required, alpha=0.05)
    assert early.winner is None and not early.horizon_reached and "horizon not reached" in early.reason
    assert early.tests[0] is not None and early.tests[0].p_value < 1e-6  # significant, but too early: no winner
    win = decide([ArmCounts(100, 70, 100), ArmCounts(100, 90, 100)], required=required, alpha=0.05)
    assert win.winner == 1 and win.horizon_reached
    lose = decide([ArmCounts(100, 90, 100), ArmCounts(100, 70, 100)], required=required, alpha=0.05)
    assert lose.winner == 0 and "control beats" in lose.reason
    tie = decide([ArmCounts(100, 80, 100), ArmCounts(100, 82, 100)], required=required, alpha=0.05)
    assert tie.winner is None and tie.horizon_reached and "no significant difference" in tie.reason
    # Three arms: Bonferroni (0.025 each); p = 0.0477 would win a two-arm test but not this one.
    three = decide([ArmCounts(100, 80, 100), ArmCounts(100, 90, 100), ArmCounts(100, 79, 100)],
                   required=required, alpha=0.05)
    assert three.winner is None and three.tests[0] is not None and 0.025 < three.tests[0].p_value < 0.05


@pytest.mark.parametrize("change, message", [
    ({"arms": [{"version": 1, "weight": 0.5}, {"version": 2, "weight": 0.4}]}, "sum to 1"),
    ({"arms": [{"version": 1, "weight": 0.5}, {"version": 1, "weight": 0.5}]}, "different version"),
    ({"arms": [{"version": 1, "weight": 1.0}]}, "at least 2"),
    ({"arms": [{"version": v, "weight": 1 / 6} for v in range(1, 7)]}, "at most 5"),
    ({"arms": [{"version": 1, "weight": float("nan")}, {"version": 2, "weight": 0.5}]}, "finite"),
    ({"mde": 0}, "greater than 0"),
    ({"alpha": 0.5}, "less than or equal to 0.2"),
    ({"baseline_rate": 0.5, "mde": 0.6}, "too large"),
    ({"expected_samples_per_device": 0}, "greater than or equal to 1"),
    ({"salt": "x" * 101}, "at most 100"),
    ({"peek": True}, "Extra inputs"),
])
def test_design_refuses_bad_input(change: dict[str, object], message: str) -> None:
    body = {"arms": [{"version": 1, "weight": 0.5}, {"version": 2, "weight": 0.5}], "mde": 0.1,
            "expected_samples_per_device": 100, **change}
    with pytest.raises(ValidationError, match=message):
        ExperimentDesign.model_validate(body)

"""A/B statistics: arm hashing, Wilson and Newcombe intervals, two-proportion tests, sample size, the decision.

Fixed-horizon design: the sample size per arm is computed before the test starts from the pre-registered
baseline rate, minimum detectable effect, alpha and power; no decision is taken before every arm reached it,
and the decision uses the first `required` labelled outcomes of each arm only, so looking at the report while
data arrives (peeking) changes nothing and earns no early stop. More than two arms: each treatment is tested
against the control (the first arm) at alpha / (arms - 1) (Bonferroni).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

FISHER_MIN_EXPECTED = 5.0  # below this expected cell count the normal approximation is not trusted


def bucket(salt: str, device_id: str) -> float:
    """Return the device's stable position in [0, 1): sha256(salt (the experiment id) + device id), first 8 bytes."""
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def arm_of(position: float, weights: Sequence[float]) -> int:
    """Return the arm whose cumulative weight interval holds `position` (the last arm absorbs rounding)."""
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        if position < cumulative:
            return index
    return len(weights) - 1


def assign(salt: str, device_ids: Sequence[str], weights: Sequence[float]) -> dict[str, tuple[int, float]]:
    """Return device id -> (arm, bucket); independent of the order the devices are listed in."""
    return {device_id: (arm_of(position := bucket(salt, device_id), weights), position)
            for device_id in device_ids}


def required_per_arm(baseline_rate: float, mde: float, alpha: float, power: float) -> int:
    """Return the labelled outcomes each arm needs to detect `mde` around `baseline_rate` (two-sided z-test).

    n = (z_{1-a/2} sqrt(2 p q) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / mde^2 with p the mean of p1 and p2 (Fleiss,
    no continuity correction); p2 = baseline + mde, or baseline - mde when that would pass 1.
    """
    p1 = baseline_rate
    p2 = p1 + mde if p1 + mde < 1 else p1 - mde
    pooled = (p1 + p2) / 2
    z_alpha, z_beta = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    root = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root**2 / mde**2 - 1e-9)


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Return the Wilson score interval of a proportion, or None without observations."""
    if n <= 0:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(s1: int, n1: int, s2: int, n2: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Return Newcombe's hybrid score interval for p2 - p1 (his method 10), or None when an arm is empty."""
    first, second = wilson_interval(s1, n1, alpha), wilson_interval(s2, n2, alpha)
    if first is None or second is None:
        return None
    p1, p2 = s1 / n1, s2 / n2
    (l1, u1), (l2, u2) = first, second
    difference = p2 - p1
    low = difference - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = difference + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return low, high


@dataclass(frozen=True)
class TestResult:
    """A two-sided test of two proportions."""

    method: str
    statistic: float | None
    p_value: float


def two_proportion_test(s1: int, n1: int, s2: int, n2: int) -> TestResult | None:
    """Test p1 = p2: pooled two-proportion z-test, or Fisher's exact test when an expected cell is below 5."""
    if n1 <= 0 or n2 <= 0:
        return None
    table = np.array([[s1, n1 - s1], [s2, n2 - s2]], dtype=np.int64)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    if expected.min() < FISHER_MIN_EXPECTED:
        odds, p_value = stats.fisher_exact(table, alternative="two-sided")
        return TestResult("fisher_exact", float(odds) if math.isfinite(odds) else None, float(p_value))
    pooled = (s1 + s2) / (n1 + n2)
    z = (s2 / n2 - s1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return TestResult("two_proportion_z", z, float(2 * stats.norm.sf(abs(z))))


@dataclass(frozen=True)
class DistributionTest:
    """Chi-square test of homogeneity of predicted class counts across arms."""

    chi2: float | None
    dof: int
    p_value: float | None
    classes: list[str]


def prediction_test(counts: Sequence[Mapping[str, int]]) -> DistributionTest | None:
    """Compare the arms' prediction distributions; None unless two arms predicted something."""
    classes = sorted({c for arm in counts for c, n in arm.items() if n > 0})
    table = np.array([[arm.get(c, 0) for c in classes] for arm in counts], dtype=np.int64)
    table = table[table.sum(axis=1) > 0] if classes else table
    if len(classes) < 2 or table.shape[0] < 2:
        return None if table.shape[0] < 2 else DistributionTest(None, 0, None, classes)
    chi2, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    return DistributionTest(float(chi2), int(dof), float(p_value), classes)


@dataclass(frozen=True)
class ArmCounts:
    """Labelled outcomes of one arm: those up to the horizon (n, correct) and all of them."""

    n: int
    correct: int
    n_total: int


@dataclass(frozen=True)
class Decision:
    """The winner arm (None for no decision) and why."""

    winner: int | None
    horizon_reached: bool
    reason: str
    tests: list[TestResult | None]
    significant: list[bool]


def decide(arms: Sequence[ArmCounts], *, required: int, alpha: float) -> Decision:
    """Decide at the fixed horizon: a winner only when every arm reached `required` and a test is significant.

    A treatment significantly better than the control wins (the best such one); if every treatment is
    significantly worse, the control wins; anything else is no winner.
    """
    per_comparison = alpha / (len(arms) - 1)
    control = arms[0]
    tests = [two_proportion_test(control.correct, control.n, arm.correct, arm.n) for arm in arms[1:]]
    significant = [t is not None and t.p_value < per_comparison for t in tests]
    short = [i for i, arm in enumerate(arms) if arm.n < required]
    if short:
        counts = ", ".join(f"arm {i} has {arms[i].n}" for i in short)
        return Decision(None, False, f"horizon not reached: {required} labelled outcomes per arm required, {counts}; "
                                     "no decision before the horizon (fixed-horizon design, no early stop)",
                        tests, significant)
    rates = [arm.correct / arm.n for arm in arms]
    better = [i + 1 for i, sig in enumerate(significant) if sig and rates[i + 1] > rates[0]]
    if better:
        best = max(better, key=lambda i: rates[i])
        return Decision(best, True, f"arm {best} beats the control: {rates[best]:.4f} vs {rates[0]:.4f} "
                                    f"(p < {per_comparison:g})", tests, significant)
    if all(sig and rates[i + 1] < rates[0] for i, sig in enumerate(significant)):
        return Decision(0, True, f"the control beats every treatment (each p < {per_comparison:g})", tests,
                        significant)
    return Decision(None, True, f"no significant difference at the horizon (alpha {per_comparison:g} per "
                                "comparison): keep the control, or design a larger test", tests, significant)

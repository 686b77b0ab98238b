"""The decision rule: continuous in n (no switch at 10,000 rows), monotone in n, and the range check.

Findings of issue 9 this file pins: a 0.1 sd shift on 20 features was flagged 20/20 at 10,000 rows and 0/20
at 10,001; a constant feature that changes value scored PSI 0 and was never flagged past 10,000 rows nor in
sketch mode; mass moving beyond the reference's range was invisible to decile PSI.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.drift.baseline import build_baseline
from control_plane.drift.selection import DriftConfig, DriftReport, detect_drift
from control_plane.drift.service import bin_rows
from control_plane.drift.sketch import SketchLayout, detect_drift_sketch


def _sketch(reference: np.ndarray, current: np.ndarray, config: DriftConfig | None = None) -> DriftReport:
    layout = SketchLayout.from_baseline(build_baseline(reference))
    return detect_drift_sketch(bin_rows(layout, current), config, include_output=False)


@pytest.fixture(scope="module")
def normal_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(100_000, 20)), rng.normal(size=(100_000, 20))


def test_one_more_row_does_not_flip_the_verdicts(normal_pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, current = normal_pair
    for shift in (0.1, 0.3):
        at = {n: detect_drift(reference[:n], current[:n] + shift).n_drifted for n in (10_000, 10_001, 100_000)}
        assert at[10_000] == at[10_001], (shift, at)
        assert at[10_000] <= at[100_000] == 20, (shift, at)  # more rows: the shift only becomes clearer
    assert detect_drift(reference[:10_001], current[:10_001] + 0.3).n_drifted == 20


def test_no_false_alarms_on_equal_distributions(normal_pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, current = normal_pair
    for n in (500, 10_000, 10_001, 100_000):
        report = detect_drift(reference[:n], current[:n])
        assert report.n_drifted == 0 and not any(f.range_drifted for f in report.features), n
    assert _sketch(reference[:50_000], current).n_drifted == 0


CHECKPOINTS = (2_000, 9_999, 10_000, 10_001, 30_000, 200_000)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shift=st.floats(0.15, 1.0), scale=st.sampled_from([1.0, 1.0, 1.3]), seed=st.integers(0, 2**32 - 1))
def test_adding_rows_never_makes_a_real_shift_disappear(shift: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = np.column_stack([rng.normal(size=200_000), rng.exponential(size=200_000)])
    current = np.column_stack([rng.normal(shift, scale, 200_000), rng.exponential(size=200_000) * (1 + shift)])
    baseline_rows = reference[:50_000]
    for mode in ("exact", "sketch"):
        flagged = []
        for n in CHECKPOINTS:
            report = (detect_drift(reference[:n], current[:n]) if mode == "exact"
                      else _sketch(baseline_rows, current[:n]))
            flagged.append([f.drifted for f in report.features])
        for feature in range(2):
            series = [row[feature] for row in flagged]
            first = series.index(True) if True in series else len(series)
            assert all(series[first:]), (mode, feature, dict(zip(CHECKPOINTS, series, strict=True)))
            assert series[CHECKPOINTS.index(10_000)] == series[CHECKPOINTS.index(10_001)]
            assert series[-1], (mode, feature, shift)  # a shift of at least 0.15 sd moves 6 % of the mass


@pytest.mark.parametrize("n", [200, 20_000])
def test_a_constant_feature_that_changes_value_is_flagged(n: int) -> None:
    reference = np.column_stack([np.full(n, 5.0), np.random.default_rng(1).normal(size=n)])
    for new_value in (6.0, 4.0):
        current = reference.copy()
        current[:, 0] = new_value
        exact, sketch = detect_drift(reference, current), _sketch(reference, current)
        for report in (exact, sketch):
            constant = report.features[0]
            assert constant.drifted and constant.range_drifted and constant.out_of_range == 1.0, report.mode
            if new_value > 5.0:  # the one edge is 5.0: [5, inf) holds both values, so the bins see nothing
                assert constant.psi == pytest.approx(0.0, abs=1e-9) and constant.chi2 == pytest.approx(0.0)
            assert not report.features[1].drifted
        assert exact.features[0].ks == 1.0


def test_mass_beyond_the_reference_range_is_flagged() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(50_000, 2))
    current = rng.normal(size=(50_000, 2))
    tail = rng.choice(50_000, 1_500, replace=False)  # 3 % of the rows jump past the reference maximum
    current[tail, 0] = reference[:, 0].max() + rng.uniform(0.1, 3.0, tail.size)
    for report in (detect_drift(reference, current), _sketch(reference, current)):
        feature = report.features[0]
        assert feature.psi < 0.1 and (feature.ks or 0) < 0.04  # invisible to the binned and shift tests
        assert feature.out_of_range == pytest.approx(0.03, abs=1e-3)
        assert feature.range_drifted and feature.drifted, report.mode
        assert feature.range_p_adjusted is not None and feature.range_p_adjusted < 1e-100
        assert not report.features[1].drifted


def test_mass_moving_inside_a_degenerate_bin_is_flagged_in_exact_mode() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    reference = np.where(rng.uniform(size=n) < 0.6, 0.0, rng.exponential(size=n))[:, None]  # 60 % zeros
    current = np.where(rng.uniform(size=n) < 0.6, 1e-3, rng.exponential(size=n))[:, None]  # zeros become 0.001
    report = detect_drift(reference, current)
    assert report.features[0].psi < 0.01 and report.features[0].drifted and report.features[0].ks > 0.5


def test_min_effect_zero_is_the_plain_test(normal_pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, current = normal_pair
    plain = detect_drift(reference[:3000], current[:3000] + 0.05, config=DriftConfig(min_effect=0.0))
    for feature in plain.features:
        assert feature.p_effect_adjusted == feature.p_adjusted
        assert feature.drifted == (feature.p_adjusted is not None and feature.p_adjusted < 0.05)

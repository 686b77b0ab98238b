"""Automatic test choice, minimum sample sizes, correction across features and report shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from control_plane.drift.selection import DriftConfig, detect_drift


def _data(n_ref: int, n_cur: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = np.column_stack([rng.normal(size=(n_ref, 3)), rng.integers(0, 4, n_ref)])
    cur = np.column_stack([rng.normal(size=(n_cur, 3)), rng.integers(0, 4, n_cur)])
    cur[:, 0] += 0.5
    return ref, cur


def test_small_samples_use_ks_and_chi2_with_bh_correction() -> None:
    ref, cur = _data(2000, 800)
    report = detect_drift(ref, cur, categorical=[3])
    tests = [f.test for f in report.features]
    assert tests == ["ks", "ks", "ks", "chi2"]
    raw = np.array([stats.ks_2samp(ref[:, j], cur[:, j]).pvalue for j in range(3)])
    table = np.vstack([np.bincount(ref[:, 3].astype(int)), np.bincount(cur[:, 3].astype(int))])
    raw = np.append(raw, stats.chi2_contingency(table, correction=False).pvalue)
    assert [f.p_value for f in report.features] == pytest.approx(raw.tolist(), rel=1e-9)
    assert [f.p_adjusted for f in report.features] == pytest.approx(stats.false_discovery_control(raw).tolist())
    assert [f.drifted for f in report.features] == [True, False, False, False]
    assert report.n_drifted == 1 and report.share_drifted == 0.25 and not report.dataset_drifted


def test_bonferroni_correction() -> None:
    ref, cur = _data(2000, 800)
    report = detect_drift(ref, cur, categorical=[3], config=DriftConfig(correction="bonferroni"))
    for feature in report.features:
        assert feature.p_value is not None and feature.p_adjusted == pytest.approx(min(1.0, feature.p_value * 4))


def test_large_samples_use_the_same_tests_with_the_effect_floor() -> None:
    ref, cur = _data(30_000, 20_000)
    report = detect_drift(ref, cur, categorical=[3])
    assert [f.test for f in report.features] == ["ks", "ks", "ks", "chi2"]  # no switch by sample size
    first = report.features[0]
    assert first.drifted and first.statistic == first.ks and first.threshold == 0.025
    assert first.p_value == pytest.approx(stats.ks_2samp(ref[:, 0], cur[:, 0], method="asymp").pvalue, abs=1e-12)
    assert first.psi > 0.1 and first.chi2 is not None and first.js is not None
    assert not any(f.drifted for f in report.features[1:])
    category = report.features[3]
    p = np.bincount(ref[:, 3].astype(int)) / 30_000
    q = np.bincount(cur[:, 3].astype(int)) / 20_000
    assert category.statistic == category.tvd == pytest.approx(np.abs(p - q).sum() / 2, abs=1e-12)


def test_too_few_samples_are_not_judged() -> None:
    ref, cur = _data(2000, 20)
    report = detect_drift(ref, cur, categorical=[3])
    assert all(f.status == "insufficient" and not f.drifted for f in report.features)
    assert all(f.p_adjusted is None for f in report.features)


@pytest.mark.parametrize("method", ["psi", "ks", "chi2", "js", "wasserstein"])
def test_forced_methods(method: str) -> None:
    ref, cur = _data(3000, 3000)
    report = detect_drift(ref, cur, categorical=[3], config=DriftConfig(method=method))  # type: ignore[arg-type]
    numeric_test = report.features[0].test
    assert numeric_test == method
    assert report.features[3].test == ("chi2" if method in ("ks", "wasserstein") else method)
    assert report.features[0].drifted
    if method == "wasserstein":
        expected = stats.wasserstein_distance(ref[:, 0], cur[:, 0]) / ref[:, 0].std()
        assert report.features[0].wasserstein == pytest.approx(expected, rel=1e-9)


def test_report_is_json_ready() -> None:
    ref, cur = _data(500, 400)
    document = detect_drift(ref, cur, feature_names=["w", "x", "y", "z"], categorical=[3]).to_dict()
    text = json.dumps(document)
    assert '"feature": "w"' in text and document["mode"] == "exact"


def test_feature_names_and_shapes_are_checked() -> None:
    with pytest.raises(ValueError):
        detect_drift(np.zeros((10, 2)), np.zeros((10, 3)))


def test_report_does_not_depend_on_the_thread_count() -> None:
    ref, cur = _data(12_000, 11_000, seed=4)
    ref = np.column_stack([ref] * 5)  # 20 columns: several blocks, categorical columns in between
    cur = np.column_stack([cur] * 5)
    categorical = [3, 7, 11, 15, 19]
    single = detect_drift(ref, cur, categorical=categorical, workers=1).to_dict()
    assert detect_drift(ref, cur, categorical=categorical, workers=2).to_dict() == single
    assert detect_drift(ref, cur, categorical=categorical).to_dict() == single

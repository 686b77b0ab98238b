"""Window validation, merging and sketch-mode drift against the exact raw-data statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from control_plane.drift.baseline import Baseline
from control_plane.drift.selection import DriftConfig, detect_drift
from control_plane.drift.sketch import (
    LATENCY_BUCKETS_MS,
    BaselineMismatch,
    BinMismatch,
    InconsistentCounts,
    NegativeCount,
    NonFiniteCount,
    SchemaError,
    SketchLayout,
    detect_drift_sketch,
    merge_vectors,
    merge_windows,
    parse_window,
)
from edge_agent import telemetry

from .conftest import make_reference, record_windows


def test_protocol_constants_match_the_edge() -> None:
    assert LATENCY_BUCKETS_MS == telemetry.LATENCY_BUCKETS_MS


def test_windows_parse_and_merge_to_direct_counts(baseline: Baseline) -> None:
    current = make_reference(5000, seed=1)
    messages = record_windows(baseline, current)
    assert len(messages) == 5 and [m["window_seq"] for m in messages] == [1, 2, 3, 4, 5]
    layout = SketchLayout.from_baseline(baseline)
    windows = [parse_window(m, layout) for m in messages]
    merged = merge_windows(layout, windows)
    assert merged.n_windows == 5 and merged.counts("n")[0] == 5000
    stacked = merge_vectors(layout, np.stack([w.vector for w in windows]))
    assert np.array_equal(stacked.vector, merged.vector)
    offsets = baseline.numeric_bin_offsets
    for k, feature in enumerate(baseline.numeric):
        direct = np.bincount(
            np.searchsorted(feature.edges, current[:, k], side="right"), minlength=len(feature.edges) + 1
        )
        assert merged.counts("bins")[offsets[k] : offsets[k + 1]].tolist() == direct.tolist()
    cat = baseline.categorical[0]
    assert merged.counts("cats").tolist() == np.bincount(current[:, 3].astype(int), minlength=len(cat.values)).tolist()


def test_sketch_ks_within_resolution_of_exact_ks(baseline: Baseline) -> None:
    rng = np.random.default_rng(2)
    current = make_reference(4000, seed=3)
    current[:, 0] += 0.15
    current[:, 1] *= rng.uniform(1.0, 1.3)
    reference = make_reference(20_000)
    layout = SketchLayout.from_baseline(baseline)
    merged = merge_windows(layout, [parse_window(m, layout) for m in record_windows(baseline, current)])
    report = detect_drift_sketch(merged, DriftConfig(method="ks"))
    for k, feature in enumerate(baseline.numeric):
        verdict = report.by_name()[feature.name]
        exact = stats.ks_2samp(reference[:, k], current[:, k]).statistic
        assert verdict.ks is not None and verdict.ks_upper is not None
        assert verdict.ks <= exact + 1e-12 <= verdict.ks_upper + 1e-12
        assert exact - verdict.ks <= 0.02  # percentile grid: about 1 % reference mass per bin
    assert report.by_name()["a"].drifted and not report.by_name()["c"].drifted


def test_sketch_and_exact_modes_agree_on_psi(baseline: Baseline) -> None:
    current = make_reference(6000, seed=4)
    current[:, 2] = current[:, 2] * 0.5 + 0.3
    reference = make_reference(20_000)
    layout = SketchLayout.from_baseline(baseline)
    merged = merge_windows(layout, [parse_window(m, layout) for m in record_windows(baseline, current)])
    sketch = detect_drift_sketch(merged).by_name()
    exact = detect_drift(reference, current, feature_names=["a", "b", "c", "cat"], categorical=[3]).by_name()
    for name in ("a", "b", "c", "cat"):
        assert sketch[name].psi == pytest.approx(exact[name].psi, rel=1e-9, abs=1e-12)
        assert sketch[name].drifted == exact[name].drifted
    assert sketch["c"].drifted and sketch["c"].band.value == "major"
    assert sketch["__output__"].n_current == 6000


def test_unseen_categories_and_nonfinite_inputs_are_counted(baseline: Baseline) -> None:
    current = make_reference(500, seed=5)
    current[:50, 3] = 9.0
    current[50:60, 0] = np.nan
    current[60:65, 1] = np.inf
    current[65:70, 2] = 5.0  # above the reference max
    layout = SketchLayout.from_baseline(baseline)
    merged = merge_windows(layout, [parse_window(m, layout) for m in record_windows(baseline, current)])
    assert merged.counts("unseen").tolist() == [50]
    assert merged.counts("nan").tolist() == [10, 0, 0, 0] and merged.counts("inf").tolist() == [0, 5, 0, 0]
    assert merged.counts("above_max")[2] == 5
    verdict = detect_drift_sketch(merged).by_name()["cat"]
    assert verdict.drifted and verdict.nonfinite_current == 0
    assert detect_drift_sketch(merged).by_name()["a"].nonfinite_current == 10


@pytest.fixture()
def message(baseline: Baseline) -> dict:
    return record_windows(baseline, make_reference(300, seed=6))[0]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda m: m.update(schema="edgeloop.telemetry/v0"), SchemaError),
        (lambda m: m.pop("model"), SchemaError),
        (lambda m: m.update(baseline_id="bl_other"), BaselineMismatch),
        (lambda m: m["bins"][1].__setitem__(0, -3), NegativeCount),
        (lambda m: m["bins"][1].__setitem__(0, float("nan")), NonFiniteCount),
        (lambda m: m["bins"][1].__setitem__(0, float("inf")), NonFiniteCount),
        (lambda m: m["bins"][0].__setitem__(-1, 10_000), BinMismatch),
        (lambda m: m["bins"][0].__setitem__(1, m["bins"][0][0]), BinMismatch),
        (lambda m: m["bins"][1].pop(), SchemaError),
        (lambda m: m.update(bins={"i": [], "c": []}), SchemaError),
        (lambda m: m.update(n=m["n"] + 1), InconsistentCounts),
        (lambda m: m.update(errors=m["calls"] + 1), InconsistentCounts),
        (lambda m: m.update(n=-1), NegativeCount),
        (lambda m: m.update(n=float("nan")), NonFiniteCount),
        (lambda m: m.update(window_end=m["window_start"] - 1), SchemaError),
        (lambda m: m.update(window_seq="7"), SchemaError),
    ],
)
def test_bad_windows_raise_typed_errors(message: dict, baseline: Baseline, mutate, error) -> None:  # type: ignore[no-untyped-def]
    layout = SketchLayout.from_baseline(baseline)
    parse_window(message, layout)
    bad = copy.deepcopy(message)
    mutate(bad)
    with pytest.raises(error) as raised:
        parse_window(bad, layout)
    assert raised.value.reason in {
        "malformed",
        "baseline_mismatch",
        "bin_mismatch",
        "negative_count",
        "nonfinite_count",
        "inconsistent_counts",
    }


def test_merge_rejects_windows_of_another_baseline(baseline: Baseline, message: dict) -> None:
    from control_plane.drift.baseline import build_baseline

    other = build_baseline(make_reference(1000, seed=9), categorical=[3])
    window = parse_window(message, SketchLayout.from_baseline(baseline))
    with pytest.raises(BaselineMismatch):
        merge_windows(SketchLayout.from_baseline(other), [window])

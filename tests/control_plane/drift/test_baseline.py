"""Reference baselines: grids, counts, JSON round trip and content hash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from control_plane.drift.baseline import (
    BaselineError,
    baseline_from_dict,
    build_baseline,
    coarse_counts,
)


def _reference() -> np.ndarray:
    rng = np.random.default_rng(0)
    ref = np.column_stack(
        [
            rng.normal(size=5000),
            np.where(rng.uniform(size=5000) < 0.6, 0.0, rng.exponential(size=5000)),  # 60 % zeros
            rng.integers(0, 4, 5000).astype(float),
            np.full(5000, 3.0),
        ]
    )
    ref[::50, 0] = np.nan
    return ref


def test_fine_grid_counts_and_decile_subset() -> None:
    ref = _reference()
    baseline = build_baseline(ref, categorical=[2], labels=np.arange(5000) % 3)
    normal = baseline.numeric[0]
    assert len(normal.edges) == 99 and normal.missing == 100 and normal.n == 4900
    assert sum(normal.counts) == 4900 and len(normal.counts) == 100
    column = ref[np.isfinite(ref[:, 0]), 0]
    assert normal.counts == np.bincount(np.searchsorted(normal.edges, column, side="right"), minlength=100).tolist()
    deciles = np.quantile(column, np.arange(1, 10) / 10)
    assert np.array_equal(np.asarray(normal.edges)[normal.coarse], deciles)
    assert coarse_counts(np.asarray(normal.counts), normal.coarse).tolist() == [490] * 10


def test_ties_collapse_edges_and_deciles() -> None:
    baseline = build_baseline(_reference(), categorical=[2])
    zeros = baseline.numeric[1]
    assert zeros.edges[0] == 0.0 and len(zeros.edges) < 99
    assert len(set(zeros.edges)) == len(zeros.edges)
    assert np.all(np.diff(zeros.edges) > 0)
    coarse = coarse_counts(np.asarray(zeros.counts), zeros.coarse)
    assert coarse.sum() == 5000 and coarse[1] >= 3000  # the zero atom sits in one decile bin
    constant = baseline.numeric[2]
    assert constant.edges == [3.0] and constant.counts == [0, 5000] and constant.coarse == [0]


def test_categorical_and_output_sections() -> None:
    rng = np.random.default_rng(1)
    scores = rng.dirichlet(np.ones(3), size=5000)
    baseline = build_baseline(_reference(), categorical=[2], labels=scores.argmax(axis=1), scores=scores)
    cat = baseline.categorical[0]
    assert cat.values == [0.0, 1.0, 2.0, 3.0] and sum(cat.counts) == 5000 and cat.index == 2
    assert baseline.output is not None and baseline.output.kind == "classes"
    assert baseline.output.values == [0.0, 1.0, 2.0] and sum(baseline.output.counts) == 5000
    assert sum(baseline.output.confidence_counts) == 5000
    score_only = build_baseline(_reference(), scores=rng.uniform(size=5000))
    assert score_only.output is not None and score_only.output.kind == "score"
    assert len(score_only.output.counts) == len(score_only.output.edges) + 1


def test_json_round_trip_and_stable_id() -> None:
    baseline = build_baseline(_reference(), categorical=[2])
    again = build_baseline(_reference(), categorical=[2])
    assert baseline.baseline_id == again.baseline_id and baseline.baseline_id.startswith("bl_")
    document = json.loads(baseline.to_json())
    assert baseline_from_dict(document) == baseline
    other = build_baseline(_reference()[:4000], categorical=[2])
    assert other.baseline_id != baseline.baseline_id


def test_tampered_baseline_is_rejected() -> None:
    document = json.loads(build_baseline(_reference()).to_json())
    document["numeric"][0]["counts"][0] += 1  # one row moved to another bin: still sums to n
    document["numeric"][0]["counts"][1] -= 1
    with pytest.raises(BaselineError, match="baseline_id"):
        baseline_from_dict(document)
    document = json.loads(build_baseline(_reference()).to_json())
    document["numeric"][0]["edges"][3] = document["numeric"][0]["edges"][2]
    with pytest.raises(BaselineError, match="edges"):
        baseline_from_dict(document)
    with pytest.raises(BaselineError):
        baseline_from_dict({"schema": "nope"})


def test_bad_reference_input() -> None:
    with pytest.raises(BaselineError):
        build_baseline(np.zeros(10))
    with pytest.raises(BaselineError):
        build_baseline(np.full((10, 2), np.nan))
    with pytest.raises(BaselineError):
        build_baseline(np.zeros((10, 2)), feature_names=["a", "a"])
    with pytest.raises(BaselineError):
        build_baseline(np.zeros((10, 2)), categorical=[5])

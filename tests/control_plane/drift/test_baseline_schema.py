"""The strict baseline schema: every malformed document is refused naming its field, and nothing else escapes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.drift.baseline import BaselineError, BaselineFieldError, baseline_from_dict, build_baseline
from control_plane.drift.service import bin_rows
from control_plane.drift.sketch import SketchLayout, detect_drift_sketch


def _document() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    reference = np.column_stack([rng.normal(size=500), rng.integers(0, 4, 500).astype(float)])
    built = build_baseline(reference, feature_names=["x", "c"], categorical=[1], labels=rng.integers(0, 3, 500))
    document: dict[str, Any] = json.loads(built.to_json())
    del document["baseline_id"]  # tampered documents are judged by their content, not refused for the id alone
    return document


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _swap_vocabulary(document: dict[str, Any]) -> None:
    values = document["categorical"][0]["values"]
    values[0], values[1] = values[1], values[0]


def _negative_count(document: dict[str, Any]) -> None:
    counts = document["numeric"][0]["counts"]
    counts[0], counts[1] = counts[0] - 1 - counts[0], counts[1] + 1 + counts[0]  # still adds up to n


# (what the finding or the schema names, change, field the refusal must name)
MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("string in edges", _set(["numeric", 0, "edges", 3], "0.5"), "numeric[0].edges[3]"),
    ("boolean in edges", _set(["numeric", 0, "edges", 0], True), "numeric[0].edges[0]"),
    ("NaN edge", _set(["numeric", 0, "edges", 5], float("nan")), "numeric[0].edges[5]"),
    ("infinite edge", _set(["numeric", 0, "edges", 98], float("inf")), "numeric[0].edges[98]"),
    ("unsorted edges", _set(["numeric", 0, "edges", 4], -100.0), "numeric[0].edges[4]"),
    ("decile index out of range", _set(["numeric", 0, "coarse", 8], 99), "numeric[0].coarse[8]"),
    ("decile indices out of order", _set(["numeric", 0, "coarse", 2], 1), "numeric[0].coarse[2]"),
    ("negative count", _negative_count, "numeric[0].counts[0]"),
    ("count as a string", _set(["numeric", 0, "counts", 0], "5"), "numeric[0].counts[0]"),
    ("count as a float", _set(["numeric", 0, "counts", 0], 5.0), "numeric[0].counts[0]"),
    ("count past 2**53", _set(["numeric", 0, "counts", 0], 2**64), "numeric[0].counts[0]"),
    ("counts that do not add up", _set(["numeric", 0, "n"], 499), "numeric[0].counts"),
    ("too few counts", lambda d: d["numeric"][0]["counts"].pop(), "numeric[0].counts"),
    ("unsorted vocabulary", _swap_vocabulary, "categorical[0].values[1]"),
    ("duplicate category", _set(["categorical", 0, "values", 1], 0.0), "categorical[0].values[1]"),
    ("feature index out of range", _set(["numeric", 0, "index"], 7), "numeric[0].index"),
    ("duplicate feature index", _set(["categorical", 0, "index"], 0), "categorical[0].index"),
    ("duplicate feature name", _set(["categorical", 0, "name"], "x"), "categorical[0].name"),
    ("min above the first edge", _set(["numeric", 0, "min"], 10.0), "numeric[0].min"),
    ("negative std", _set(["numeric", 0, "std"], -1.0), "numeric[0].std"),
    ("n_features disagrees", _set(["n_features"], 3), "n_features"),
    ("n_features as a string", _set(["n_features"], "2"), "n_features"),
    ("unknown field", _set(["numeric", 0, "extra"], 1), "numeric[0].extra"),
    ("missing field", lambda d: d["numeric"][0].pop("edges"), "numeric[0].edges"),
    ("feature not an object", _set(["numeric", 0], [1, 2]), "numeric[0]"),
    ("wrong output kind", _set(["output", "kind"], "regression"), "output.kind"),
    ("unsorted output classes", _set(["output", "values", 0], 9.0), "output.values[1]"),
    ("output counts off", _set(["output", "n"], 1), "output.counts"),
    ("schema", _set(["schema"], "edgeloop.baseline/v0"), "schema"),
    ("baseline id not a string", _set(["baseline_id"], 5), "baseline_id"),
]


@pytest.mark.parametrize(("case", "change", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_baselines_are_refused_naming_the_field(case: str, change: Callable[[dict[str, Any]], None],
                                                          field: str) -> None:
    document = _document()
    change(document)
    with pytest.raises(BaselineFieldError) as refused:
        baseline_from_dict(document)
    assert refused.value.field == field, (case, str(refused.value))


def test_a_valid_document_passes_and_gets_its_id() -> None:
    baseline = baseline_from_dict(_document())
    assert baseline.baseline_id.startswith("bl_")
    assert baseline_from_dict(baseline.to_dict()) == baseline


def test_a_stored_id_that_does_not_match_is_refused() -> None:
    document = _document()
    document["baseline_id"] = "bl_" + "0" * 32
    with pytest.raises(BaselineFieldError, match="baseline_id"):
        baseline_from_dict(document)


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                      st.lists(st.integers(-3, 200), max_size=3), st.dictionaries(st.text(max_size=2), st.none(),
                                                                                   max_size=1))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:4] + value[-2:]):  # ends of long lists are where off-by-ones hide
            paths += _paths(item, (*prefix, i if i < 4 else len(value) - 6 + i))
    return paths


BASE = _document()
PATHS = _paths(BASE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), JSON_LEAF), min_size=1, max_size=3))
def test_any_mutation_is_refused_cleanly_or_yields_a_usable_baseline(edits: list[tuple[tuple[Any, ...], Any]]) -> None:
    document = copy.deepcopy(BASE)
    for path, value in edits:
        target: Any = document
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent
    try:
        baseline = baseline_from_dict(document)
    except BaselineError:
        return  # refused with a named field: the only allowed failure
    layout = SketchLayout.from_baseline(baseline)
    rows = np.random.default_rng(0).normal(size=(50, baseline.n_features))
    report = detect_drift_sketch(bin_rows(layout, rows))
    assert len(report.features) >= baseline.n_features

"""Reference baselines: the bins every telemetry sketch and drift test is measured against.

Numpy only, because the JSON this module writes travels to devices in the OTA manifest's `baseline` field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from control_plane.drift.baseline_schema import BaselineError, BaselineFieldError, check_baseline_document

BASELINE_SCHEMA = "edgeloop.baseline/v1"
FINE_PERCENTILES = tuple(range(1, 100))  # 99 interior edges at the 1st..99th percentiles
COARSE_PERCENTILES = tuple(range(10, 100, 10))  # PSI deciles, a subset of the fine grid by construction


@dataclass(frozen=True)
class NumericBaseline:
    """Reference bins of one numeric feature: interior edges, counts per bin, and the PSI decile subset.

    Bin `i` holds values `x` with `edges[i-1] <= x < edges[i]` (bin 0 and the last bin are open-ended),
    which is `np.searchsorted(edges, x, side="right")`. `coarse` lists the indices into `edges` of the
    decile edges, so decile counts are sums of consecutive fine bins.
    """

    name: str
    index: int
    edges: list[float]
    counts: list[int]
    coarse: list[int]
    min: float
    max: float
    mean: float
    std: float
    n: int
    missing: int = 0


@dataclass(frozen=True)
class CategoricalBaseline:
    """Reference vocabulary of one categorical (integer-coded) feature with counts, values sorted."""

    name: str
    index: int
    values: list[float]
    counts: list[int]
    n: int
    missing: int = 0


@dataclass(frozen=True)
class OutputBaseline:
    """Reference distribution of the model output: predicted class counts or a score histogram.

    `kind="classes"`: `values` are the class labels and `counts` their reference frequencies.
    `kind="score"`: `edges`/`counts` bin a scalar score like a numeric feature. For classifiers
    `confidence_edges`/`confidence_counts` optionally bin the top class probability.
    """

    kind: Literal["classes", "score"]
    values: list[float] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    confidence_edges: list[float] = field(default_factory=list)
    confidence_counts: list[int] = field(default_factory=list)
    n: int = 0


@dataclass(frozen=True)
class Baseline:
    """A content-addressed reference baseline, serialisable to the manifest's `baseline` field."""

    numeric: list[NumericBaseline]
    categorical: list[CategoricalBaseline]
    output: OutputBaseline | None
    n_reference: int
    n_features: int
    schema: str = BASELINE_SCHEMA
    baseline_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document (with `baseline_id`)."""
        return asdict(self)

    def to_json(self) -> str:
        """Return the canonical compact JSON text."""
        return _canonical(self.to_dict())

    @property
    def numeric_bin_offsets(self) -> np.ndarray:
        """Return offsets of each numeric feature's bins in the flat concatenation (length F+1)."""
        sizes = [len(f.edges) + 1 for f in self.numeric]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    @property
    def categorical_offsets(self) -> np.ndarray:
        """Return offsets of each categorical feature's vocabulary in the flat concatenation."""
        sizes = [len(f.values) for f in self.categorical]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    def feature_names(self) -> list[str]:
        """Return all feature names, numeric first then categorical."""
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]


def _canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def compute_baseline_id(document: Mapping[str, Any]) -> str:
    """Return `bl_` + 32 hex of sha256 over the canonical JSON without the id field."""
    body = {k: v for k, v in document.items() if k != "baseline_id"}
    return "bl_" + hashlib.sha256(_canonical(body).encode()).hexdigest()[:32]


def _finite(column: np.ndarray) -> np.ndarray:
    return column[np.isfinite(column)]


def quantile_grid(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return deduplicated 1..99th percentile edges and the indices of the decile edges among them."""
    fine = np.quantile(sorted_values, np.asarray(FINE_PERCENTILES) / 100.0, method="linear")
    edges = np.unique(fine)
    # Deciles are picked from the fine values themselves, so they are exactly members of `edges`.
    deciles = np.unique(fine[np.asarray(COARSE_PERCENTILES) - 1])
    coarse = np.searchsorted(edges, deciles)
    return edges, coarse.astype(np.int64)


def numeric_baseline(name: str, index: int, column: np.ndarray) -> NumericBaseline:
    """Build the fine percentile grid and reference counts for one numeric column."""
    column = np.asarray(column, dtype=np.float64)
    values = np.sort(_finite(column))
    if values.size == 0:
        raise BaselineError(f"feature {name!r} has no finite reference values")
    edges, coarse = quantile_grid(values)
    counts = np.diff(np.concatenate([[0], np.searchsorted(values, edges, side="left"), [values.size]]))
    return NumericBaseline(
        name=name,
        index=index,
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        coarse=[int(c) for c in coarse],
        min=float(values[0]),
        max=float(values[-1]),
        mean=float(values.mean()),
        std=float(values.std()),
        n=int(values.size),
        missing=int(column.size - values.size),
    )


def categorical_baseline(name: str, index: int, column: np.ndarray) -> CategoricalBaseline:
    """Count the reference vocabulary of one integer-coded categorical column."""
    column = np.asarray(column, dtype=np.float64)
    values = _finite(column)
    vocabulary, counts = np.unique(values, return_counts=True)
    return CategoricalBaseline(
        name=name,
        index=index,
        values=[float(v) for v in vocabulary],
        counts=[int(c) for c in counts],
        n=int(values.size),
        missing=int(column.size - values.size),
    )


def output_baseline(labels: np.ndarray | None = None, scores: np.ndarray | None = None) -> OutputBaseline:
    """Summarise model outputs: class counts (+ top-probability bins) or a scalar score histogram."""
    if labels is not None:
        classes, counts = np.unique(np.asarray(labels, dtype=np.float64), return_counts=True)
        conf_edges: list[float] = []
        conf_counts: list[int] = []
        if scores is not None:
            score_array = np.asarray(scores, dtype=np.float64)
            top = score_array.max(axis=1) if score_array.ndim == 2 else score_array
            grid = numeric_baseline("confidence", -1, top)
            conf_edges, conf_counts = grid.edges, grid.counts
        return OutputBaseline(
            kind="classes",
            values=[float(c) for c in classes],
            counts=[int(c) for c in counts],
            confidence_edges=conf_edges,
            confidence_counts=conf_counts,
            n=int(counts.sum()),
        )
    if scores is None:
        raise BaselineError("output baseline needs labels or scores")
    grid = numeric_baseline("score", -1, np.asarray(scores, dtype=np.float64).reshape(-1))
    return OutputBaseline(kind="score", edges=grid.edges, counts=grid.counts, n=grid.n)


def build_baseline(
    reference: np.ndarray,
    *,
    feature_names: Sequence[str] | None = None,
    categorical: Sequence[int] = (),
    labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> Baseline:
    """Build a baseline from a 2D reference matrix (rows x features) and optional model outputs."""
    matrix = np.asarray(reference, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise BaselineError("reference must be a non-empty 2D array")
    n_features = matrix.shape[1]
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(n_features)]
    if len(names) != n_features or len(set(names)) != n_features:
        raise BaselineError("feature_names must be unique and match the number of columns")
    categorical_set = set(categorical)
    if not categorical_set <= set(range(n_features)):
        raise BaselineError("categorical indices out of range")
    numeric = [numeric_baseline(names[i], i, matrix[:, i]) for i in range(n_features) if i not in categorical_set]
    cats = [categorical_baseline(names[i], i, matrix[:, i]) for i in sorted(categorical_set)]
    output = output_baseline(labels, scores) if labels is not None or scores is not None else None
    draft = Baseline(
        numeric=numeric, categorical=cats, output=output, n_reference=matrix.shape[0], n_features=n_features
    )
    document = draft.to_dict()
    return baseline_from_dict({**document, "baseline_id": compute_baseline_id(document)})


def baseline_from_dict(document: Mapping[str, Any]) -> Baseline:
    """Parse a baseline document after the strict schema check; the stored id must match the content.

    Raise BaselineFieldError (naming the field) for a document that breaks the schema.
    """
    if not isinstance(document, Mapping) or document.get("schema") != BASELINE_SCHEMA:
        schema = document.get("schema") if isinstance(document, Mapping) else None
        raise BaselineFieldError("schema", f"unknown baseline schema {str(schema)[:100]!r}")
    check_baseline_document(document)
    baseline = Baseline(
        numeric=[NumericBaseline(**f) for f in document["numeric"]],
        categorical=[CategoricalBaseline(**f) for f in document["categorical"]],
        output=OutputBaseline(**document["output"]) if document.get("output") else None,
        n_reference=document["n_reference"],
        n_features=document["n_features"],
        baseline_id=document.get("baseline_id", ""),
    )
    expected = compute_baseline_id(baseline.to_dict())
    if baseline.baseline_id and baseline.baseline_id != expected:
        raise BaselineFieldError("baseline_id", "does not match the content")
    return baseline if baseline.baseline_id else _with_id(baseline, expected)


def _with_id(baseline: Baseline, baseline_id: str) -> Baseline:
    document = baseline.to_dict()
    document["baseline_id"] = baseline_id
    return baseline_from_dict(document)


def coarse_counts(fine_counts: np.ndarray, coarse: Sequence[int]) -> np.ndarray:
    """Sum fine bins into the coarse (decile) bins along the last axis."""
    starts = np.concatenate([[0], np.asarray(coarse, dtype=np.int64) + 1])
    return np.add.reduceat(np.asarray(fine_counts), starts, axis=-1)

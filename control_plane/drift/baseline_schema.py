"""Strict check of a baseline document before anything indexes, sorts or sums it.

Every later step (the sketch layout, the ingest's bin checks, PSI/KS on counts, the device's binning) assumes
what this module proves: finite strictly increasing edges, counts that are non-negative integers of the right
length adding up to `n`, decile indices in range and ascending, a sorted vocabulary without duplicates, each
feature index used once, and numbers that are JSON numbers (never strings or booleans). A refusal names the
field (`numeric[2].edges[5]`), so the API can answer 422 with it. Pure Python: no numpy call sees the document
until it has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Caps that keep one window's dense vector and one registration small; a built baseline has 99 edges.
MAX_FEATURES = 10_000
MAX_EDGES = 1_000
MAX_VOCABULARY = 10_000
MAX_COUNTERS = 1_000_000  # all bins and vocabulary entries of one baseline together
MAX_COUNT = 2**53  # counts stay exact as float64 and their sums fit int64
MAX_NAME = 200

TOP_FIELDS = {"schema", "numeric", "categorical", "output", "n_reference", "n_features", "baseline_id"}
NUMERIC_FIELDS = {"name", "index", "edges", "counts", "coarse", "min", "max", "mean", "std", "n", "missing"}
CATEGORICAL_FIELDS = {"name", "index", "values", "counts", "n", "missing"}
OUTPUT_FIELDS = {"kind", "values", "edges", "counts", "confidence_edges", "confidence_counts", "n"}


class BaselineError(ValueError):
    """Raise when reference data or a baseline document cannot be used."""


class BaselineFieldError(BaselineError):
    """A baseline document field that breaks the schema; `field` is its path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _fields(value: Any, path: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BaselineFieldError(path, "must be an object")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise BaselineFieldError(f"{path}.{unknown[0]}" if path else unknown[0], "unknown field")
    missing = sorted(required - set(value))
    if missing:
        raise BaselineFieldError(f"{path}.{missing[0]}" if path else missing[0], "required")
    return value


def _integer(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BaselineFieldError(path, "must be an integer")
    if not low <= value <= high:
        raise BaselineFieldError(path, f"must lie in [{low}, {high}]")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BaselineFieldError(path, "must be a number")
    if isinstance(value, int) and abs(value) > MAX_COUNT:
        raise BaselineFieldError(path, "integer beyond 2**53 is not exact as a float")
    if not math.isfinite(value):
        raise BaselineFieldError(path, "must be finite")
    return float(value)


def _list(value: Any, path: str, max_length: int) -> list[Any]:
    if not isinstance(value, list):
        raise BaselineFieldError(path, "must be a list")
    if len(value) > max_length:
        raise BaselineFieldError(path, f"at most {max_length} entries")
    return value


def _increasing(value: Any, path: str, max_length: int, min_length: int = 0) -> list[float]:
    items = _list(value, path, max_length)
    if len(items) < min_length:
        raise BaselineFieldError(path, f"at least {min_length} entries")
    numbers = [_number(item, f"{path}[{i}]") for i, item in enumerate(items)]
    for i in range(1, len(numbers)):
        if numbers[i] <= numbers[i - 1]:
            raise BaselineFieldError(f"{path}[{i}]", "must be strictly greater than the previous entry")
    return numbers


def _counts(value: Any, path: str, length: int, total: int | None) -> list[int]:
    items = _list(value, path, length)
    if len(items) != length:
        raise BaselineFieldError(path, f"must have {length} entries")
    counts = [_integer(item, f"{path}[{i}]", 0, MAX_COUNT) for i, item in enumerate(items)]
    if total is not None and sum(counts) != total:
        raise BaselineFieldError(path, f"must add up to n ({total})")
    return counts


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME or "\x00" in value:
        raise BaselineFieldError(path, f"must be a non-empty string of at most {MAX_NAME} characters without NUL")
    return value


def _numeric(feature: Any, path: str, n_features: int) -> tuple[str, int, int]:
    doc = _fields(feature, path, NUMERIC_FIELDS, NUMERIC_FIELDS - {"missing"})
    name = _name(doc["name"], f"{path}.name")
    index = _integer(doc["index"], f"{path}.index", 0, n_features - 1)
    edges = _increasing(doc["edges"], f"{path}.edges", MAX_EDGES, min_length=1)
    n = _integer(doc["n"], f"{path}.n", 1, MAX_COUNT)
    _counts(doc["counts"], f"{path}.counts", len(edges) + 1, n)
    coarse = [_integer(c, f"{path}.coarse[{i}]", 0, len(edges) - 1)
              for i, c in enumerate(_list(doc["coarse"], f"{path}.coarse", len(edges)))]
    for i in range(1, len(coarse)):
        if coarse[i] <= coarse[i - 1]:
            raise BaselineFieldError(f"{path}.coarse[{i}]", "must be strictly greater than the previous entry")
    low, high = _number(doc["min"], f"{path}.min"), _number(doc["max"], f"{path}.max")
    _number(doc["mean"], f"{path}.mean")
    if _number(doc["std"], f"{path}.std") < 0:
        raise BaselineFieldError(f"{path}.std", "must not be negative")
    # The edges are quantiles of the reference values, so they lie inside the observed range.
    if not low <= edges[0] or not edges[-1] <= high:
        raise BaselineFieldError(f"{path}.min" if edges[0] < low else f"{path}.max",
                                 "the edges must lie within [min, max]")
    _integer(doc.get("missing", 0), f"{path}.missing", 0, MAX_COUNT)
    return name, index, len(edges) + 1


def _categorical(feature: Any, path: str, n_features: int) -> tuple[str, int, int]:
    doc = _fields(feature, path, CATEGORICAL_FIELDS, CATEGORICAL_FIELDS - {"missing"})
    name = _name(doc["name"], f"{path}.name")
    index = _integer(doc["index"], f"{path}.index", 0, n_features - 1)
    values = _increasing(doc["values"], f"{path}.values", MAX_VOCABULARY)
    n = _integer(doc["n"], f"{path}.n", 0, MAX_COUNT)
    _counts(doc["counts"], f"{path}.counts", len(values), n)
    _integer(doc.get("missing", 0), f"{path}.missing", 0, MAX_COUNT)
    return name, index, len(values)


def _output(value: Any) -> int:
    doc = _fields(value, "output", OUTPUT_FIELDS, {"kind"})
    kind = doc["kind"]
    if kind not in ("classes", "score"):
        raise BaselineFieldError("output.kind", "must be 'classes' or 'score'")
    n = _integer(doc.get("n", 0), "output.n", 0, MAX_COUNT)
    values = _increasing(doc.get("values", []), "output.values", MAX_VOCABULARY)
    edges = _increasing(doc.get("edges", []), "output.edges", MAX_EDGES)
    if kind == "classes":
        if edges:
            raise BaselineFieldError("output.edges", "must be empty for kind 'classes'")
        _counts(doc.get("counts", []), "output.counts", len(values), n)
        size = len(values)
    else:
        if values or not edges:
            raise BaselineFieldError("output.edges" if not edges else "output.values",
                                     "kind 'score' needs edges and no values")
        _counts(doc.get("counts", []), "output.counts", len(edges) + 1, n)
        size = len(edges) + 1
    confidence = _increasing(doc.get("confidence_edges", []), "output.confidence_edges", MAX_EDGES)
    _counts(doc.get("confidence_counts", []), "output.confidence_counts", len(confidence) + 1 if confidence else 0,
            None)
    return size + (len(confidence) + 1 if confidence else 0)


def check_baseline_document(document: Any) -> None:
    """Raise BaselineFieldError naming the first field of `document` that breaks the baseline schema."""
    doc = _fields(document, "", TOP_FIELDS, TOP_FIELDS - {"output", "baseline_id"})
    n_features = _integer(doc["n_features"], "n_features", 1, MAX_FEATURES)
    _integer(doc["n_reference"], "n_reference", 0, MAX_COUNT)
    numeric = _list(doc["numeric"], "numeric", MAX_FEATURES)
    categorical = _list(doc["categorical"], "categorical", MAX_FEATURES)
    parsed = [_numeric(f, f"numeric[{i}]", n_features) for i, f in enumerate(numeric)]
    parsed += [_categorical(f, f"categorical[{i}]", n_features) for i, f in enumerate(categorical)]
    if len(parsed) != n_features:
        raise BaselineFieldError("n_features", f"is {n_features} but numeric and categorical list {len(parsed)}")
    names: set[str] = set()
    indices: set[int] = set()
    counters = 0
    for position, (name, index, size) in enumerate(parsed):
        path = f"numeric[{position}]" if position < len(numeric) else f"categorical[{position - len(numeric)}]"
        if name in names:
            raise BaselineFieldError(f"{path}.name", "duplicate feature name")
        if index in indices:
            raise BaselineFieldError(f"{path}.index", "duplicate feature index")
        names.add(name)
        indices.add(index)
        counters += size
    if doc.get("output") is not None:
        counters += _output(doc["output"])
    if counters > MAX_COUNTERS:
        raise BaselineFieldError("numeric", f"more than {MAX_COUNTERS} bins and categories in all")
    if "baseline_id" in doc and not isinstance(doc["baseline_id"], str):
        raise BaselineFieldError("baseline_id", "must be a string")

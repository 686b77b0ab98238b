"""Numeric columns hold numbers: no silent coercion of booleans or strings, integers compared exactly to 2**53."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from control_plane.drift.selection import detect_drift
from tests.conftest import TokenFactory

LIMIT = 2**53


def _pair(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 2)), rng.normal(size=(n, 2))


@pytest.mark.parametrize("bad", [np.array([[True, 1.0]] * 50, dtype=object), np.array([["1.5", "2"]] * 50),
                                 np.array([[True, False]] * 50), np.array([["1.5", 2.0]] * 50, dtype=object),
                                 np.array([[1 + 2j, 1.0]] * 50), np.array([[LIMIT + 1, 1]] * 50, dtype=np.int64),
                                 np.array([[-LIMIT - 1, 1]] * 50, dtype=np.int64),
                                 np.array([[2**64 - 1, 1]] * 50, dtype=np.uint64),
                                 np.array([[LIMIT + 1, 1.0]] * 50, dtype=object)])
def test_non_numbers_and_inexact_integers_are_refused(bad: np.ndarray) -> None:
    reference, _ = _pair(50)
    with pytest.raises(ValueError, match=r"column 0|numeric columns"):
        detect_drift(reference, bad)
    with pytest.raises(ValueError, match=r"column 0|numeric columns"):
        detect_drift(bad, reference)


def test_integers_up_to_2_53_are_compared_exactly() -> None:
    reference = np.array([[LIMIT - 2]] * 60 + [[LIMIT - 1]] * 60, dtype=np.int64)
    current = np.array([[LIMIT]] * 120, dtype=np.int64)  # all different from every reference value
    report = detect_drift(reference, current)
    assert report.features[0].ks == 1.0 and report.features[0].drifted
    objects = detect_drift(reference.astype(object), current.astype(object))
    assert objects.features[0].ks == 1.0


def test_categorical_columns_may_hold_strings() -> None:
    reference = np.array([["a", 1.0]] * 60 + [["b", 2.0]] * 60, dtype=object)
    current = np.array([["a", 1.0]] * 120, dtype=object)
    report = detect_drift(reference, current, categorical=[0])
    assert report.features[0].drifted and report.features[0].test == "chi2"


def test_the_exact_endpoint_refuses_coercions(client: TestClient, make_headers: TokenFactory) -> None:
    viewer = make_headers("viewer")
    rows = [[float(i), float(i % 3)] for i in range(40)]
    ok = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"rows": rows}, "current": [[LIMIT, 1], *rows[1:]], "categorical": [1]})
    assert ok.status_code == 200, ok.text
    for field, current in (("current", [["1.5", 1.0], *rows[1:]]), ("current", [[True, 1.0], *rows[1:]]),
                           ("current", [[LIMIT + 1, 1.0], *rows[1:]]), ("current", [[-(2**70), 1.0], *rows[1:]])):
        response = client.post("/api/v1/drift/exact", headers=viewer, json={
            "reference": {"rows": rows}, "current": current})
        assert response.status_code == 422, (current[0], response.text)
        assert field in response.text
    big_reference = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"rows": [[2**64, 1.0], *rows[1:]]}, "current": rows})
    assert big_reference.status_code == 422 and "rows[0][0]" in big_reference.text
    boolean_index = client.post("/api/v1/drift/exact", headers=viewer, json={
        "reference": {"rows": rows}, "current": rows, "categorical": [True]})
    assert boolean_index.status_code == 422

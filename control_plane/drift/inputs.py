"""What a numeric column may hold: real numbers, compared as float64, and nothing that would be coerced.

Exact mode compares numeric columns as IEEE-754 doubles (KS, deciles and ranges on float64). Three kinds of
input would change meaning silently on the way there, so they are refused with a ValueError instead:
- booleans, strings (also numeric strings like "1.5"), complex numbers, dates and other objects;
- integers whose magnitude exceeds 2**53, the largest range in which every integer has its own double
  (2**53 + 1 would compare equal to 2**53). Integers up to 2**53 are compared exactly.
Categorical columns may hold any values that sort (strings included); they are compared by equality.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

EXACT_INTEGER_LIMIT = 2**53


def _column_label(side: str, column: int) -> str:
    return f"{side} column {column}"


def check_numeric_columns(matrix: np.ndarray, columns: np.ndarray, side: str) -> None:
    """Raise ValueError if a numeric column of `matrix` holds a non-number or an integer beyond 2**53."""
    if columns.size == 0:
        return
    kind = matrix.dtype.kind
    if kind == "f":
        return
    if kind in "iu":
        if matrix.shape[0] == 0:
            return
        # Column reductions, not matrix[:, columns]: that would copy the whole integer matrix.
        too_big = (matrix.max(axis=0) > EXACT_INTEGER_LIMIT) | (matrix.min(axis=0) < -EXACT_INTEGER_LIMIT)
        offending = [int(c) for c in columns if too_big[int(c)]]
        if offending:
            raise ValueError(f"{_column_label(side, offending[0])}: integers beyond 2**53 cannot be compared exactly "
                             "as float64; scale them or declare the column categorical")
        return
    if kind != "O":
        raise ValueError(f"{side}: numeric columns must hold numbers, not {matrix.dtype} values")
    for column in columns:
        for value in matrix[:, int(column)]:
            if value is None:
                continue  # missing, like NaN
            if isinstance(value, bool | np.bool_) or not isinstance(value, Real):
                raise ValueError(f"{_column_label(side, int(column))}: {type(value).__name__} value {str(value)[:40]!r}"
                                 " in a numeric column")
            if isinstance(value, int | np.integer) and abs(int(value)) > EXACT_INTEGER_LIMIT:
                raise ValueError(f"{_column_label(side, int(column))}: integer beyond 2**53 cannot be compared "
                                 "exactly as float64")

"""Constrained types shared by every schema and message parser that reaches the database.

One set of bounds for both engines, so a value that would fail only inside SQLite or PostgreSQL is refused
at the edge with a 422 (API) or a quarantine reason (MQTT) naming the field, never a 500 or a lost batch:
- integers: SQLite INTEGER and PostgreSQL BIGINT are signed 64-bit; PostgreSQL INTEGER columns are 32-bit.
- text: PostgreSQL refuses NUL in text (SQLite keeps it); every free-form field has a documented length cap.
- floats: JSON has no NaN or Infinity; a non-finite number is refused, never stored as null.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# Length caps for free-form text, in characters (documented in docs/api-limits.md).
NAME_MAX = 200
LABEL_MAX = 100
SHORT_TEXT_MAX = 1_000
DESCRIPTION_MAX = 10_000
LONG_TEXT_MAX = 100_000


def refuse_nul(value: str) -> str:
    """Refuse a NUL character, which PostgreSQL cannot store in text."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def refuse_non_finite(value: float) -> float:
    """Refuse NaN and ±Infinity."""
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def refuse_nul_deep(value: Any, depth: int = 0, max_depth: int = 32) -> Any:
    """Refuse NUL characters and non-finite floats anywhere in a JSON-like value, and nesting past max_depth."""
    if depth > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    if isinstance(value, str):
        return refuse_nul(value)
    if isinstance(value, float):
        return refuse_non_finite(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("integer outside the signed 64-bit range")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(str(key))
            refuse_nul_deep(item, depth + 1, max_depth)
        return value
    if isinstance(value, list | tuple):
        for item in value:
            refuse_nul_deep(item, depth + 1, max_depth)
    return value


# Integers: strict (no bool, no numeric strings), bounded by the column they land in. The 64-bit upper bound is
# written lt=2**63 (the same set as le=2**63-1): the OpenAPI document carries bounds as floats, and 2**63-1 as a
# float rounds up to 2**63, which clients and fuzzers would then take for a valid value.
Int32 = Annotated[StrictInt, Field(ge=-(2**31), le=INT32_MAX)]
PositiveInt32 = Annotated[StrictInt, Field(ge=1, le=INT32_MAX)]
NonNegativeInt32 = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, lt=2**63)]
NonNegativeInt64 = Annotated[StrictInt, Field(ge=0, lt=2**63)]
PositiveInt64 = Annotated[StrictInt, Field(ge=1, lt=2**63)]

# Floats that JSON can carry and both engines store.
FiniteFloat = Annotated[float, AfterValidator(refuse_non_finite)]

# Text without NUL, capped by kind.
SafeStr = Annotated[str, AfterValidator(refuse_nul)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(refuse_nul)]
Label = Annotated[str, Field(min_length=1, max_length=LABEL_MAX), AfterValidator(refuse_nul)]
ShortText = Annotated[str, Field(max_length=SHORT_TEXT_MAX), AfterValidator(refuse_nul)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX), AfterValidator(refuse_nul)]
LongText = Annotated[str, Field(max_length=LONG_TEXT_MAX), AfterValidator(refuse_nul)]

# Free-form JSON objects (evidence, metadata): bounded depth, no NUL, finite numbers, 64-bit integers.
SafeJson = Annotated[dict[str, Any], AfterValidator(refuse_nul_deep)]

# Path and query parameters arrive as text, so their integers are parsed from it (the body types above are strict);
# the bounds are the same.
ParamPositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
ParamNonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
ParamNonNegativeInt64 = Annotated[int, Field(ge=0, lt=2**63)]
ParamPositiveInt64 = Annotated[int, Field(ge=1, lt=2**63)]

# Size caps for free-form JSON objects, in bytes of their compact JSON form (documented in docs/api-limits.md).
SMALL_JSON_MAX_BYTES = 16_384  # tags, labels, params, metrics, metadata, evidence
LARGE_JSON_MAX_BYTES = 4 * 1024 * 1024  # dataset schemas and drift baselines, input/output schemas
LIST_MAX = 1_000  # items of a free-form list (tags, variables, device ids, feature names)


def json_size_cap(max_bytes: int) -> AfterValidator:
    """Return a validator refusing a JSON value whose compact encoding exceeds ``max_bytes``."""

    def cap(value: Any) -> Any:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
        if size > max_bytes:
            raise ValueError(f"is {size} bytes of JSON; at most {max_bytes} are allowed")
        return value

    return AfterValidator(cap)


# Free-form JSON objects with a size cap as well (checked after the depth, NUL and number checks).
SmallJson = Annotated[dict[str, Any], AfterValidator(refuse_nul_deep), json_size_cap(SMALL_JSON_MAX_BYTES)]
LargeJson = Annotated[dict[str, Any], AfterValidator(refuse_nul_deep), json_size_cap(LARGE_JSON_MAX_BYTES)]

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def refuse_number_as_datetime(value: Any) -> Any:
    """Refuse a number (or numeric text) where a date-time is expected: pydantic would read it as Unix time."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z, not a number")
    return value


# A date-time parameter: ISO 8601 text only, never a bare number silently read as seconds since 1970.
ParamDateTime = Annotated[datetime, BeforeValidator(refuse_number_as_datetime)]

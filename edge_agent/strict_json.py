"""Parse untrusted JSON so that every decoder failure is one exception and numbers stay finite and bounded."""

from __future__ import annotations

import json
import math
from typing import Any

INT64_LIMIT = 2**63
MAX_MESSAGE_BYTES = 1 << 20


class StrictJsonError(ValueError):
    """The bytes are not acceptable JSON for the protocol; the text says why."""


def _reject_constant(name: str) -> Any:
    raise StrictJsonError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"number {text[:40]} is not finite as a float")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)  # Python refuses more than 4300 digits with ValueError.
    if not -INT64_LIMIT <= value < INT64_LIMIT:
        raise StrictJsonError(f"integer {text[:40]}... is outside the signed 64-bit range")
    return value


def loads_strict(data: bytes | str, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Return the parsed value; raise StrictJsonError for anything the protocol does not allow.

    Refused: more than max_bytes, invalid UTF-8, NaN/Infinity literals, floats that overflow to inf,
    integers outside int64, and nesting deep enough to exhaust the recursion limit.
    """
    if len(data) > max_bytes:
        raise StrictJsonError(f"{len(data)} bytes > {max_bytes}")
    try:
        return json.loads(
            data, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except StrictJsonError:
        raise
    except (ValueError, TypeError, RecursionError, MemoryError, OverflowError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError comes from deep nesting.
        raise StrictJsonError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc

"""Windows a hostile or broken device might send, each built from a real one, with the reason it must get."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from control_plane.drift.sketch import SPARSE_FIELDS

Window = dict[str, Any]


def _with(**fields: Any) -> Callable[[Window], Window]:
    return lambda window: {**window, **fields}


def _model(name: Any = "sensor-clf", version: Any = 1) -> Callable[[Window], Window]:
    return lambda window: {**window, "model": {"name": name, "version": version}}


def _overflowing_counts(window: Window) -> Window:
    """Counts whose int64 sum wraps to n: 2^63-1 + 2^63-1 + 2 == 0 (mod 2^64)."""
    bad = copy.deepcopy(window)
    for name in SPARSE_FIELDS:
        bad[name] = [[], []]
    bad.update(n=0, calls=0, errors=0, output_unseen=0, bins=[[0, 1, 2], [2**63 - 1, 2**63 - 1, 2]])
    return bad


def _deep_field(window: Window) -> bytes:
    # 1,010 levels: within orjson's 1,024, beyond what repr() survives when it names the wrong schema.
    raw = json.dumps({**window, "schema": "SCHEMA"}, separators=(",", ":")).encode()
    return raw.replace(b'"SCHEMA"', b"[" * 1010 + b"0" + b"]" * 1010)


# name -> (how to spoil a good window, the quarantine reason it must get)
SPOILERS: dict[str, tuple[Callable[[Window], Window | bytes], str]] = {
    "seq_2_63": (_with(window_seq=2**63), "out_of_range"),
    "seq_2_64": (_with(window_seq=2**64), "malformed"),  # orjson reads integers past 64 bits as floats
    "seq_bool": (_with(window_seq=True), "malformed"),
    "dropped_2_63": (_with(dropped_windows=2**63), "out_of_range"),
    "version_2_31": (_model(version=2**31), "bad_model"),
    "version_negative": (_model(version=-5), "bad_model"),
    "version_zero": (_model(version=0), "bad_model"),
    "model_name_201": (_model(name="m" * 201), "bad_model"),
    "model_name_nul": (_model(name="sensor\x00clf"), "bad_model"),
    "model_name_surrogate": (_model(name="sensor\ud800"), "bad_model"),
    "unknown_model": (_model(name="no-such-model"), "unknown_model"),
    "unknown_version": (_model(version=7), "unknown_model"),
    "overflowing_counts": (_overflowing_counts, "count_overflow"),
    "start_minus_1e308": (_with(window_start=-1e308), "implausible_time"),
    "start_1970": (_with(window_start=0.0), "implausible_time"),
    "deep_field": (_deep_field, "wrong_schema"),
}
# Raw payloads (not JSON objects of a window) and their reasons.
RAW: dict[str, tuple[bytes, str]] = {
    "nested_100k": (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    "nested_40k_object": (b"{\"a\":" * 40_000 + b"1" + b"}" * 40_000, "too_deep"),  # under 256 KB
    "nul_bytes": (b"\x00\x00{", "malformed_json"),
    "empty": (b"", "malformed_json"),
}

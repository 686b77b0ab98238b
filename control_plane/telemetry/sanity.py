"""Checks a parsed window must pass before it may reach the database: column ranges, plausible times and sums.

The parser (`drift.sketch.parse_window` and its batch twin `fastparse`) checks a window's shape and counts;
it knows nothing of the columns the window lands in. Everything here could otherwise fail only inside one
engine (SQLite raises OverflowError past 2^63 - 1, PostgreSQL refuses 2^31 in an INTEGER column and NUL in
text) or be stored as nonsense (window_start -1e308, counts whose int64 sums wrap). A failed check is a
`Rejected` with a reason, so the quarantine path records it and the rest of the batch is stored.
"""

from __future__ import annotations

from typing import Any

from control_plane.constraints import INT32_MAX, INT64_MAX, NAME_MAX
from control_plane.drift.sketch import SketchLayout, TelemetryWindow

# Largest count any one counter of a window may hold. A window is a minute of one device: 2^40 (~10^12)
# rows is already absurd, and with it no sum inside one window, nor of 2^23 windows merged by the drift
# monitor, can wrap an int64 (the totals check compares wrapped sums, so 2^63 - 1 + 2^63 - 1 + 2 == 0).
MAX_WINDOW_COUNT = 2**40


class Rejected(Exception):
    """A message to quarantine with a machine-readable reason."""

    def __init__(self, reason: str, detail: str, device_id: str | None = None, window_seq: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.device_id, self.window_seq = reason, detail, device_id, window_seq


def text_ok(value: Any, limit: int = NAME_MAX) -> bool:
    """Return True for a non-empty str of at most `limit` characters, no NUL, valid UTF-8 (fits String(limit))."""
    if type(value) is not str or not 0 < len(value) <= limit or "\x00" in value:
        return False
    if value.isascii():
        return True
    try:  # a lone surrogate (JSON "\\ud800") cannot be encoded for either engine
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def count_limit(layout: SketchLayout) -> int:
    """Return the largest count a window on `layout` may hold without any of its sums overflowing int64."""
    return min(MAX_WINDOW_COUNT, INT64_MAX // max(layout.length, 1))


def check_window(window: TelemetryWindow, layout: SketchLayout, *, max_window_seconds: float,
                 check_counts: bool = True) -> None:
    """Raise Rejected unless every field of `window` fits its column and its times and counts are plausible.

    `check_counts=False` skips the per-window count bound when the caller checked the whole batch at once.
    """
    seq = window.window_seq
    device_ok = text_ok(window.device_id)
    seq_ok = type(seq) is int and 0 <= seq <= INT64_MAX  # bool is an int to isinstance, not a sequence number
    ids = (window.device_id if device_ok else None, seq if seq_ok else None)
    if not device_ok:
        raise Rejected("bad_device_id", f"device_id must be 1-{NAME_MAX} characters without NUL", *ids)
    if not seq_ok:
        raise Rejected("out_of_range", "window_seq must be an integer within 0..2^63-1", *ids)
    if type(window.dropped_windows) is not int or not 0 <= window.dropped_windows <= INT64_MAX:
        raise Rejected("out_of_range", "dropped_windows must be within 0..2^63-1", *ids)
    if not text_ok(window.model_name):
        raise Rejected("bad_model", f"model name must be 1-{NAME_MAX} characters without NUL", *ids)
    if type(window.model_version) is not int or not 1 <= window.model_version <= INT32_MAX:
        raise Rejected("bad_model", f"model version {window.model_version} is not within 1..2^31-1", *ids)
    if window.window_end - window.window_start > max_window_seconds:
        raise Rejected("implausible_time", f"window spans {window.window_end - window.window_start:.3g}s "
                       f"(at most {max_window_seconds:.0f}s)", *ids)
    limit = count_limit(layout)
    if check_counts and int(window.vector.max(initial=0)) > limit:
        raise Rejected("count_overflow", f"a count exceeds {limit} (sums would overflow 64 bits)", *ids)

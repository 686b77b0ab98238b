"""The batch validator accepts and rejects exactly what drift.sketch.parse_window does, with the same vectors."""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import numpy as np
import pytest

from control_plane.drift.baseline import Baseline
from control_plane.drift.sketch import SketchLayout, TelemetryWindow, WindowError, parse_window
from control_plane.telemetry.fastparse import parse_windows
from tests.control_plane.telemetry.simulate import ListSink, SimDevice

SPARSE = ("bins", "cats", "unseen", "nan", "inf", "below_min", "above_max", "output", "confidence", "latency")


def corrupt(message: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Apply one random corruption a buggy or hostile device might send."""
    m = copy.deepcopy(message)
    field = rng.choice([f for f in SPARSE if m.get(f, [[], []])[0]] or ["bins"])
    indices, counts = m.setdefault(field, [[], []])
    choice = rng.randrange(16)
    if choice == 0 and counts:
        counts[0] = -1
    elif choice == 1 and counts:
        counts[-1] = float(counts[-1])
    elif choice == 2 and counts:
        counts[0] = True
    elif choice == 3 and indices:
        indices[-1] = 10**6
    elif choice == 4 and len(indices) > 1:
        indices[0], indices[1] = indices[1], indices[0]
    elif choice == 5 and len(indices) > 1:
        indices[1] = indices[0]
    elif choice == 6:
        m[field] = [indices]
    elif choice == 7:
        m["n"] += 1
    elif choice == 8:
        m["model"]["version"] = True
    elif choice == 9:
        m["window_end"] = m["window_start"] - 1
    elif choice == 10:
        m["errors"] = m["calls"] + 1
    elif choice == 11 and counts:
        counts[0] = 2**70
    elif choice == 12:
        m["window_seq"] = "7"
    elif choice == 13 and indices:
        indices[0] = "0"
    elif choice == 14:
        del m[field]
    else:
        m["dropped_windows"] = -1
    return m


def same(fast: TelemetryWindow | WindowError, message: dict[str, Any], layout: SketchLayout) -> bool:
    try:
        reference = parse_window(message, layout)
    except WindowError as error:
        return isinstance(fast, WindowError) and type(fast) is type(error)
    except (TypeError, ValueError, OverflowError):
        return False
    return isinstance(fast, TelemetryWindow) and np.array_equal(fast.vector, reference.vector) and (
        fast.device_id, fast.window_seq, fast.window_start, fast.window_end, fast.dropped_windows
    ) == (reference.device_id, reference.window_seq, reference.window_start, reference.window_end,
          reference.dropped_windows)


def mixed_messages(baseline: Baseline, seed: int = 7) -> list[dict[str, Any]]:
    """Return recorded windows, 60% of them corrupted one random way."""
    sink = ListSink()
    for d in range(4):
        device = SimDevice(f"dev-{d}", baseline, sink, seed=d, start=time.time() - 3600)
        for _ in range(10):
            device.run_window(rows=60 + 40 * d, errors=d)
    rng = random.Random(seed)
    return [corrupt(m, rng) if rng.random() < 0.6 else m for m in sink.messages * 5]


@pytest.mark.parametrize("hinted", [False, True], ids=["type-checked", "bool-free-hint"])
def test_batch_validation_matches_the_reference_parser(baseline: Baseline, hinted: bool) -> None:
    layout = SketchLayout.from_baseline(baseline)
    messages = mixed_messages(baseline)
    # The ingest's hint: which raw payloads cannot hold a JSON boolean (so numpy's dtype check suffices).
    bool_free = [b"true" not in json.dumps(m).encode() and b"false" not in json.dumps(m).encode() for m in messages]
    assert not all(bool_free)
    outcomes = parse_windows(messages, layout, bool_free=bool_free if hinted else None)
    comparable = []
    for message, outcome in zip(messages, outcomes, strict=True):
        try:
            parse_window(message, layout)
        except (TypeError, ValueError, OverflowError) as exc:
            if not isinstance(exc, WindowError):
                continue  # the reference parser crashes on these; the ingest quarantines them as malformed
        comparable.append((message, outcome))
    assert len(comparable) > 150
    assert all(same(outcome, message, layout) for message, outcome in comparable)
    accepted = sum(isinstance(o, TelemetryWindow) for _, o in comparable)
    assert 40 < accepted < len(comparable)


def test_a_float_among_trusted_counts_sends_only_its_window_to_the_reference_parser(baseline: Baseline) -> None:
    layout = SketchLayout.from_baseline(baseline)
    clean = [m for m in mixed_messages(baseline, seed=1) if _valid(m, layout)][:20]
    bad = copy.deepcopy(clean[3])
    bad["bins"][1][0] = float(bad["bins"][1][0])  # 3.0: numpy would make the whole batch float64
    messages = [*clean, bad]
    outcomes = parse_windows(messages, layout, bool_free=[True] * len(messages))
    assert all(isinstance(o, TelemetryWindow) for o in outcomes[:-1])
    assert isinstance(outcomes[-1], WindowError) and outcomes[-1].reason == "nonfinite_count"


def _valid(message: dict[str, Any], layout: SketchLayout) -> bool:
    try:
        parse_window(message, layout)
    except (WindowError, TypeError, ValueError, OverflowError):
        return False
    return True


def test_integer_corruptions_are_caught_without_the_per_element_type_check(baseline: Baseline) -> None:
    layout = SketchLayout.from_baseline(baseline)

    def ints_only(message: dict[str, Any]) -> bool:
        pairs = [message.get(f, [[], []]) for f in SPARSE]
        # Plain int64-sized ints only, so the batch never needs the type-checked second gathering.
        return all(isinstance(p, list) and len(p) == 2
                   and all(type(v) is int and abs(v) < 2**62 for part in p for v in part) for p in pairs)

    messages = [m for m in mixed_messages(baseline, seed=3) if ints_only(m)]
    outcomes = parse_windows(messages, layout, bool_free=[True] * len(messages))
    assert all(same(outcome, message, layout) for message, outcome in zip(messages, outcomes, strict=True))
    rejected = sum(isinstance(o, WindowError) for o in outcomes)
    assert 20 < rejected < len(messages) - 20

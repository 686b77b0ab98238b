"""The batch validator accepts and rejects exactly what drift.sketch.parse_window does, with the same vectors."""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import numpy as np

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


def test_batch_validation_matches_the_reference_parser(baseline: Baseline) -> None:
    layout = SketchLayout.from_baseline(baseline)
    sink = ListSink()
    for d in range(4):
        device = SimDevice(f"dev-{d}", baseline, sink, seed=d, start=time.time() - 3600)
        for _ in range(10):
            device.run_window(rows=60 + 40 * d, errors=d)
    rng = random.Random(7)
    messages = [corrupt(m, rng) if rng.random() < 0.6 else m for m in sink.messages * 5]
    outcomes = parse_windows(messages, layout)
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

"""The ingest code path on both engines: storage, idempotence, quarantine reasons, rate limit."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from sqlalchemy import func, select

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline, build_baseline
from control_plane.drift.sketch import SketchLayout
from control_plane.telemetry.ingest import IncomingMessage, WindowIngestor
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from tests.control_plane.telemetry.simulate import (
    FEATURES,
    ListSink,
    SimDevice,
    encode,
    predict,
    reference_data,
    register_baseline,
)


def windows(baseline: Baseline, device_id: str = "dev-1", count: int = 3, start: float | None = None,
            **kwargs: Any) -> list[dict[str, Any]]:
    """Record `count` real windows on one simulated device."""
    sink = ListSink()
    device = SimDevice(device_id, baseline, sink, seed=hash(device_id) % 1000,
                       start=start if start is not None else time.time() - 3600)
    for _ in range(count):
        device.run_window(**kwargs)
    return sink.messages


def incoming(payload: bytes | dict[str, Any], device: str | None = "dev-1") -> IncomingMessage:
    raw = payload if isinstance(payload, bytes) else encode(payload)
    return IncomingMessage(payload=raw, received_at=time.time(), topic=f"edgeloop/devices/{device}/telemetry",
                           device_hint=device)


def ingest(database: Database, ingestor: WindowIngestor, messages: list[IncomingMessage]) -> Any:
    with database.transaction() as session:
        return ingestor.ingest(session, messages, now=time.time())


def stored(database: Database) -> int:
    with database.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(TelemetryWindowRow)) or 0)


def quarantined(database: Database) -> dict[str, QuarantinedMessage]:
    with database.transaction(write=False) as session:
        return {q.reason: q for q in session.scalars(select(QuarantinedMessage))}


def test_windows_are_stored_once(database: Database, ingestor: WindowIngestor, baseline: Baseline) -> None:
    messages = windows(baseline, count=4)
    first = ingest(database, ingestor, [incoming(m) for m in messages] + [incoming(messages[0])])
    assert (first.stored, first.duplicates, dict(first.quarantined)) == (4, 1, {})
    again = ingest(database, ingestor, [incoming(m) for m in messages[1:3]])
    assert (again.stored, again.duplicates) == (0, 2)
    assert stored(database) == 4
    assert first.models == {("sensor-clf", 1)}
    with database.transaction(write=False) as session:
        row = session.scalars(select(TelemetryWindowRow).order_by(TelemetryWindowRow.window_seq)).first()
        assert row is not None
        indices, counts = json.loads(row.sketch)
        assert row.n == messages[0]["n"] == 200 and sum(counts) > 0 and len(indices) == len(counts)


def test_bad_windows_are_quarantined_with_a_reason(database: Database, ingestor: WindowIngestor,
                                                   baseline: Baseline) -> None:
    good, *rest = windows(baseline, count=8)
    wrong_schema = {**rest[0], "schema": "edgeloop.telemetry/v0"}
    negative = copy.deepcopy(rest[1])
    negative["bins"][1][0] = -5
    bad_bins = copy.deepcopy(rest[2])
    bad_bins["bins"] = [[10_000], [200]]
    future = {**rest[3], "window_start": time.time() + 7200, "window_end": time.time() + 7260}
    unknown = {**rest[4], "baseline_id": "bl_" + "0" * 32}
    nan_payload = encode(rest[5]).replace(b'"calls":10', b'"calls":NaN')
    inconsistent = copy.deepcopy(rest[6])
    inconsistent["n"] = 999
    messages = [
        incoming(good), incoming(wrong_schema), incoming(negative), incoming(bad_bins), incoming(future),
        incoming(unknown), incoming(nan_payload), incoming(inconsistent), incoming(b"{not json"),
        incoming(b"x" * (64 * 1024 + 1)), incoming(rest[6], device="dev-other"),
    ]
    result = ingest(database, ingestor, messages)
    assert result.stored == 1
    assert dict(result.quarantined) == {
        "wrong_schema": 1, "negative_count": 1, "bin_mismatch": 1, "clock_skew": 1, "unknown_baseline": 1,
        "nonfinite_count": 1, "inconsistent_counts": 1, "malformed_json": 1, "oversized": 1, "device_mismatch": 1,
    }
    rows = quarantined(database)
    assert rows["clock_skew"].device_id == "dev-1" and rows["clock_skew"].window_seq == rest[3]["window_seq"]
    assert "in the future" in rows["clock_skew"].detail
    assert rows["oversized"].payload_size == 64 * 1024 + 1 and len(rows["oversized"].payload) == 512
    assert rows["malformed_json"].payload == "{not json"


def test_a_device_sending_too_fast_is_rate_limited(database: Database, ingestor: WindowIngestor,
                                                   baseline: Baseline) -> None:
    # Burst 50, refill 1/s: a device sending 100x its one-window-a-minute rate gets 50 stored.
    flood = windows(baseline, device_id="dev-noisy", count=60, rows=20)
    calm = windows(baseline, device_id="dev-calm", count=2)
    result = ingest(database, ingestor, [incoming(m, "dev-noisy") for m in flood] +
                    [incoming(m, "dev-calm") for m in calm])
    assert result.stored == 52
    assert dict(result.quarantined) == {"rate_limited": 10}
    assert quarantined(database)["rate_limited"].device_id == "dev-noisy"


def test_old_windows_after_an_outage_are_accepted(database: Database, ingestor: WindowIngestor,
                                                  baseline: Baseline) -> None:
    late = windows(baseline, count=3, start=time.time() - 6 * 86400)
    ancient = windows(baseline, device_id="dev-2", count=1, start=time.time() - 30 * 86400)
    result = ingest(database, ingestor, [incoming(m) for m in late] + [incoming(ancient[0], "dev-2")])
    assert result.stored == 3 and dict(result.quarantined) == {"too_old": 1}


def test_one_batch_of_windows_from_two_baselines_is_stored_whole(database: Database, ingestor: WindowIngestor,
                                                                 baseline: Baseline) -> None:
    # A second baseline of the same model without the categorical column: its sketch layout has another length.
    x, _ = reference_data(1000, seed=7)
    other = build_baseline(x[:, :4], feature_names=FEATURES[:4], labels=predict(x))
    register_baseline(database, other, name="sensors-small")
    assert SketchLayout.from_baseline(other).length != SketchLayout.from_baseline(baseline).length
    mixed = windows(baseline, "dev-1", count=3) + windows(other, "dev-2", count=3)
    result = ingest(database, ingestor, [incoming(m, device=m["device_id"]) for m in mixed])
    assert (result.stored, dict(result.quarantined)) == (6, {})
    assert stored(database) == 6

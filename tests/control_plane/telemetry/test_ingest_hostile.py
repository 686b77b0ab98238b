"""Hostile windows inside bursts of good ones, on both engines: each bad one is quarantined alone, nothing else."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, WindowIngestor
from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow
from control_plane.telemetry.store import insert_windows_isolated
from tests.control_plane.telemetry.hostile import RAW, SPOILERS
from tests.control_plane.telemetry.simulate import encode
from tests.control_plane.telemetry.test_ingest import windows


def burst(baseline: Baseline, devices: int = 8, per_device: int = 8) -> list[dict[str, Any]]:
    """64 good windows from 8 other devices."""
    return [w for d in range(devices) for w in windows(baseline, device_id=f"good-{d}", count=per_device, rows=20)]


def message(payload: bytes | dict[str, Any], device: str = "dev-bad", topic: str | None = None) -> IncomingMessage:
    raw = payload if isinstance(payload, bytes) else encode(payload)
    return IncomingMessage(payload=raw, received_at=time.time(), topic=topic or f"edgeloop/devices/{device}/telemetry",
                           device_hint=device)


def stored_keys(database: Database) -> list[tuple[str, int]]:
    with database.transaction(write=False) as session:
        return [(r[0], r[1]) for r in session.execute(select(TelemetryWindowRow.device_id,
                                                             TelemetryWindowRow.window_seq))]


def quarantine_reasons(database: Database) -> dict[str, int]:
    with database.transaction(write=False) as session:
        rows = session.execute(select(QuarantinedMessage.reason, func.count()).group_by(QuarantinedMessage.reason))
        return {str(r[0]): int(r[1]) for r in rows}


@pytest.mark.parametrize("case", sorted(SPOILERS) + sorted(RAW))
def test_one_bad_window_in_a_burst_is_quarantined_and_every_good_one_stored(
        database: Database, dataset_id: str, sensor_model: None, baseline: Baseline, case: str) -> None:
    good = burst(baseline)
    if case in SPOILERS:
        spoil, reason = SPOILERS[case]
        bad = message(spoil(windows(baseline, device_id="dev-bad", count=1, rows=20)[0]))
    else:
        raw, reason = RAW[case]
        bad = message(raw)
    messages = [message(w, w["device_id"]) for w in good[:32]] + [bad] + [message(w, w["device_id"]) for w in good[32:]]
    ingestor = WindowIngestor(TelemetrySettings())
    with database.transaction() as session:
        result = ingestor.ingest(session, messages, now=time.time())
    keys = stored_keys(database)
    assert sorted(keys) == sorted({(w["device_id"], w["window_seq"]) for w in good}), "each good window once"
    assert result.stored == 64 and dict(result.quarantined) == {reason: 1}
    assert quarantine_reasons(database) == {reason: 1}
    assert result.outcomes[32].status == "quarantined" and result.outcomes[32].reason == reason
    assert [o.status for o in result.outcomes[:32] + result.outcomes[33:]] == ["stored"] * 64


def test_quarantine_rows_hold_whatever_the_message_carried(database: Database, dataset_id: str,
                                                          sensor_model: None, baseline: Baseline) -> None:
    good = burst(baseline, devices=2, per_device=4)
    window = windows(baseline, device_id="dev-bad", count=1, rows=20)[0]
    odd = [
        message(b"\x00 not json at all"),  # a NUL byte PostgreSQL text refuses
        message(encode({**window, "device_id": "x\x00" * 300})),  # mismatching id: long, with NUL
        message(window, "dev-else", topic="edgeloop/devices/" + "t" * 350 + "/telemetry"),  # beyond String(300)
        message(encode({**window, "device_id": "\ud800"}).replace(b"\\\\", b"\\")),
    ]
    hinted = {**windows(baseline, device_id="dev-hint", count=1, rows=20)[0], "device_group": "g\x00",
              "rollout_id": "\ud800"}
    messages = [message(w, w["device_id"]) for w in good] + odd + [message(hinted, "dev-hint")]
    with database.transaction() as session:
        result = WindowIngestor(TelemetrySettings()).ingest(session, messages, now=time.time())
    assert result.stored == 9 and sum(result.quarantined.values()) == 4
    assert len(stored_keys(database)) == 9
    with database.transaction(write=False) as session:
        rows = list(session.scalars(select(QuarantinedMessage)))
        group = session.scalar(select(TelemetryWindowRow.device_group)
                               .where(TelemetryWindowRow.device_id == "dev-hint"))
    assert len(rows) == 4 and all("\x00" not in (r.payload + r.detail + (r.device_id or "")) for r in rows)
    assert max(len(r.topic or "") for r in rows) <= 300
    assert group is None, "an unstorable device-supplied hint is dropped, the window kept"


def test_rows_the_database_refuses_are_isolated_and_the_rest_inserted(database: Database, dataset_id: str,
                                                                     sensor_model: None, baseline: Baseline) -> None:
    # Past validation nothing should fail; if something still does, bisection must find it and only it.
    good = burst(baseline, devices=4, per_device=4)
    ingestor = WindowIngestor(TelemetrySettings())
    with database.transaction() as session:
        result = ingestor.ingest(session, [message(w, w["device_id"]) for w in good[:1]], now=time.time())
    assert result.stored == 1
    with database.transaction(write=False) as session:
        row = session.execute(select(TelemetryWindowRow)).scalars().one()
        template = tuple(getattr(row, column) for column in
                         ("device_id", "window_seq", "model_name", "model_version", "baseline_id", "window_start",
                          "window_end", "received_at", "device_group", "rollout_id", "deployment_id", "n", "calls",
                          "errors", "dropped_windows", "sketch"))
    rows = [(f"iso-{i}", i, *template[2:]) for i in range(20)]
    rows[7] = ("iso-7", 2**63, *template[2:])  # a value the engine itself refuses
    rows[13] = ("iso-13", 13, *template[2:3], 2**31, *template[4:])
    with database.transaction() as session:
        inserted, failed = insert_windows_isolated(session, rows)
    refused = {7} if database.is_sqlite else {7, 13}  # SQLite INTEGER is 64-bit; PostgreSQL's is 32-bit
    assert {index for index, _ in failed} == refused
    assert len(inserted) == 20 - len(refused) and len(stored_keys(database)) == 21 - len(refused)

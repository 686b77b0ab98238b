"""Retention purges old telemetry, quarantine and device events in audited batches and keeps everything else."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from control_plane.audit import service as audit
from control_plane.audit.models import AuditEntry
from control_plane.cli.main import app as cli
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.fleet.models import DeviceEvent
from control_plane.main import create_app
from control_plane.retention import DAY, RetentionConfigError, RetentionPolicy, purge
from control_plane.settings import Settings
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.models import GroundTruthLabel, QuarantinedMessage, ShadowWindowRow, TelemetryWindowRow

NOW = time.time()


def _window(seq: int, received_at: float) -> TelemetryWindowRow:
    return TelemetryWindowRow(device_id="dev-1", window_seq=seq, model_name="m", model_version=1, baseline_id="b",
                              window_start=received_at - 60, window_end=received_at, received_at=received_at,
                              n=10, calls=1, errors=0, dropped_windows=0, sketch="[[],[]]")


def _label(seq: int, received_at: float) -> GroundTruthLabel:
    return GroundTruthLabel(device_id="dev-1", window_seq=seq, model_name="m", model_version=1,
                            window_start=received_at - 60, total=1, correct=1, confusion="[]", received_at=received_at)


def _shadow(i: int, received_at: float) -> ShadowWindowRow:
    return ShadowWindowRow(device_id="dev-1", window_seq=i, rollout_id="ro_1", model_name="m", model_version=1,
                           candidate_name="m", candidate_version=2, candidate_sha256="a" * 64, window_start=received_at,
                           window_end=received_at, received_at=received_at, sample_rate=1.0, max_latency_ms=50.0,
                           samples=1, rows=1, agree=1, errors=0, dropped=0, labels="{}", latency="[]",
                           active_latency="[]")


def _quarantined(received_at: float) -> QuarantinedMessage:
    return QuarantinedMessage(received_at=received_at, source="mqtt", reason="bad_json", payload_size=1, payload="{")


def _event(received_at: float) -> DeviceEvent:
    return DeviceEvent(device_id="dev-1", kind="status", state="activated", payload="{}",
                       received_at=datetime.fromtimestamp(received_at, UTC))


def fill(database: Database, *, old_age_days: float, old: int, young: int) -> None:
    """Store `old` rows aged `old_age_days` and `young` rows from the last hour in every purgeable table."""
    with database.transaction() as session:
        for i in range(old + young):
            at = NOW - old_age_days * DAY - i if i < old else NOW - 60 - i
            session.add_all([_window(i, at), _label(i, at), _shadow(i, at), _quarantined(at), _event(at)])


def counts(database: Database) -> dict[str, int]:
    with database.transaction(write=False) as session:
        return {model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
                for model in (TelemetryWindowRow, GroundTruthLabel, ShadowWindowRow, QuarantinedMessage, DeviceEvent)}


def test_purge_deletes_only_expired_rows_in_audited_batches(settings: Settings, database: Database) -> None:
    fill(database, old_age_days=200, old=7, young=3)
    policy = RetentionPolicy.from_settings(settings.model_copy(update={"retention_batch_size": 3}))

    due = purge(database, policy, now=NOW, dry_run=True)
    assert due.deleted == dict.fromkeys(counts(database), 7) and counts(database) == dict.fromkeys(due.deleted, 10)

    report = purge(database, policy, now=NOW)
    assert report.deleted == dict.fromkeys(counts(database), 7) and report.total == 35
    assert counts(database) == dict.fromkeys(report.deleted, 3)
    with database.transaction(write=False) as session:
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "retention.purged")
                                       .order_by(AuditEntry.seq)))
        assert audit.verify(session=session, public_key=None).ok
    # 7 rows in batches of 3 is 3, 3 and 1: three audited transactions per table, each naming its rows.
    assert len(entries) == 15
    assert {e.actor for e in entries} == {"system:retention"}
    rows_by_table: dict[str, int] = {}
    for entry in entries:
        rows = json.loads(entry.body)["data"]["rows"]
        rows_by_table[entry.resource_id] = rows_by_table.get(entry.resource_id, 0) + rows
    assert rows_by_table == report.deleted

    assert purge(database, policy, now=NOW).total == 0, "a second pass finds nothing and writes nothing"


def test_periods_are_per_table_and_zero_keeps_forever(settings: Settings, database: Database) -> None:
    fill(database, old_age_days=20, old=4, young=1)  # older than quarantine's 14 days, younger than the rest
    keep_events = settings.model_copy(update={"retention_device_events_days": 0})
    report = purge(database, RetentionPolicy.from_settings(keep_events), now=NOW)
    assert report.deleted == {"telemetry_windows": 0, "telemetry_labels": 0, "telemetry_shadow_windows": 0,
                              "telemetry_quarantine": 4}
    assert counts(database) == {"telemetry_windows": 5, "telemetry_labels": 5, "telemetry_shadow_windows": 5,
                                "telemetry_quarantine": 1, "fleet_device_events": 5}


def test_telemetry_retention_must_outlive_the_dedup_horizon(settings: Settings) -> None:
    too_short = settings.model_copy(update={"retention_telemetry_days": 7})
    with pytest.raises(RetentionConfigError, match="max window age"):
        RetentionPolicy.from_settings(too_short, TelemetrySettings(max_age_seconds=7 * DAY))
    assert RetentionPolicy.from_settings(too_short, TelemetrySettings(max_age_seconds=2 * DAY)).days[
        "telemetry_windows"] == 7


def test_app_refuses_to_start_with_a_retention_shorter_than_the_dedup_horizon(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"retention_telemetry_days": 3}))
    with pytest.raises(RetentionConfigError, match="EDGELOOP_RETENTION_TELEMETRY_DAYS=3"), TestClient(app):
        pass


def test_cli_purge_dry_run_then_purge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("EDGELOOP_DATABASE_URL", raising=False)
    url = Settings().resolved_database_url
    (tmp_path / "data").mkdir()
    upgrade(url)
    database = Database(url)
    try:
        fill(database, old_age_days=100, old=2, young=1)
        runner = CliRunner()
        dry = runner.invoke(cli, ["db", "purge", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "due" in dry.output and counts(database)["telemetry_windows"] == 3
        done = runner.invoke(cli, ["db", "purge"])
        assert done.exit_code == 0 and "purged" in done.output
        assert counts(database) == dict.fromkeys(counts(database), 1)
    finally:
        database.dispose()

"""Monitors on stored windows: one alert per drifting feature, hysteresis, auto-resolve, quality checks."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from sqlalchemy import case, select, update
from sqlalchemy.engine import make_url

from control_plane.alerts.models import Alert
from control_plane.db.session import Database
from control_plane.drift import monitor
from control_plane.drift.baseline import Baseline
from control_plane.drift.models import DriftMonitor
from control_plane.drift.monitor import run_pass
from control_plane.drift.schemas import MonitorConfig
from control_plane.drift.sketch import detect_drift_sketch
from control_plane.lineage.models import LineageEdge
from control_plane.registry import service as registry
from control_plane.registry.schemas import ModelCreate, VersionCreate
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, WindowIngestor
from control_plane.telemetry.lookup import BaselineCache
from control_plane.telemetry.models import TelemetryWindowRow
from tests.control_plane.telemetry.conftest import baseline, dataset_id  # noqa: F401  (fixtures)
from tests.control_plane.telemetry.simulate import MODEL, ListSink, SimDevice, encode

NOW = float(int(time.time()))


def feed(database: Database, reference: Baseline, start: float, *, devices: int = 5, count: int = 3,
         first_seq: int = 0, **kwargs: Any) -> None:
    """Record windows on `devices` simulated devices starting at `start` and ingest them."""
    messages = []
    # Seeds depend on the offset from NOW, never on the wall clock: at alpha 0.01 about 1 run in 100 would
    # otherwise see a second, statistically legitimate, drifted feature and fail the exact assertions.
    offset = int(NOW - start)
    for d in range(devices):
        sink = ListSink(seq=first_seq)
        device = SimDevice(f"dev-{d}", reference, sink, seed=d + offset, start=start)
        for _ in range(count):
            device.run_window(**kwargs)
        messages += sink.messages
    ingestor = WindowIngestor(TelemetrySettings(require_registered_model=False))  # some tests register no version
    with database.transaction() as session:
        result = ingestor.ingest(session, [IncomingMessage(encode(m), NOW, device_hint=m["device_id"])
                                           for m in messages], now=NOW)
    assert result.stored == len(messages), result.as_dict()


def configure(database: Database, **config: Any) -> None:
    with database.transaction() as session:
        session.add(DriftMonitor(model_name=MODEL, model_version=1, config=MonitorConfig(**config).model_dump(),
                                 enabled=True, created_by="test"))


def register_version(database: Database, accuracy: float | None = None) -> str:
    with database.transaction() as session:
        registry.create_model(session=session, request=ModelCreate(name=MODEL), actor="test")
        metrics = {"accuracy": accuracy} if accuracy is not None else {}
        return registry.create_version(session=session, model_name=MODEL, request=VersionCreate(metrics=metrics),
                                       actor="test").id


def alerts(database: Database) -> list[Alert]:
    with database.transaction(write=False) as session:
        return list(session.scalars(select(Alert).order_by(Alert.created_at)))


def test_one_drifting_feature_raises_one_alert_with_hysteresis(database: Database, dataset_id: str,  # noqa: F811
                                                               baseline: Baseline) -> None:  # noqa: F811
    version_id = register_version(database)
    configure(database, lookback_seconds=900, raise_after=2, clear_after=3)
    cache = BaselineCache()
    start = NOW - 3600
    feed(database, baseline, start, shift={1: 50.0})  # pressure up one reference std
    first = run_pass(database, cache, now=start + 600)
    assert not alerts(database), "one evaluation is not enough to raise"
    assert {o.feature for o in first if o.raising} == {"pressure"}
    run_pass(database, cache, now=start + 660)
    run_pass(database, cache, now=start + 720)
    (alert,) = alerts(database)
    assert (alert.check, alert.feature, alert.state, alert.occurrences) == ("feature_drift", "pressure", "open", 2)
    assert alert.severity in ("warning", "critical") and alert.model_version_id == version_id
    evidence = alert.evidence
    assert evidence["psi"] > 0.2 and evidence["p_adjusted"] < 0.01 and evidence["windows"] == 15
    assert evidence["devices"] == 5 and evidence["drifted_features"] == ["pressure"]
    assert evidence["time_range"][0] == start and evidence["n_current"] == 3000
    with database.transaction(write=False) as session:
        edge = session.scalar(select(LineageEdge).where(LineageEdge.dst_id == alert.id))
        assert edge is not None and (edge.src_kind, edge.src_id) == ("model_version", version_id)

    # Clean windows replace the drifted ones in the lookback: the alert clears after three calm passes.
    feed(database, baseline, start + 1800, first_seq=100)
    for step in range(3):
        run_pass(database, cache, now=start + 2400 + step * 60)
        assert alerts(database)[0].state == ("open" if step < 2 else "resolved")
    assert alerts(database)[0].resolved_by == "system:monitor"

    # Drift again later: a new alert, since the old one is resolved.
    feed(database, baseline, start + 2700, first_seq=200, shift={1: 50.0})
    for step in range(2):
        run_pass(database, cache, now=start + 3400 + step * 60)
    assert [(a.feature, a.state) for a in alerts(database)] == [("pressure", "resolved"), ("pressure", "open")]


def test_unit_change_shows_as_out_of_range_and_drift(database: Database, dataset_id: str,  # noqa: F811
                                                     baseline: Baseline) -> None:  # noqa: F811
    configure(database, raise_after=1)
    feed(database, baseline, NOW - 1200, scale={3: 0.01})  # humidity sent as a fraction, not percent
    outcomes = run_pass(database, BaselineCache(), now=NOW)
    opened = {(o.check, o.feature) for o in outcomes if o.action == "opened"}
    assert opened == {("feature_drift", "humidity"), ("out_of_range", "humidity")}


def test_error_rate_and_missing_values(database: Database, dataset_id: str, baseline: Baseline) -> None:  # noqa: F811
    configure(database, raise_after=1)
    feed(database, baseline, NOW - 1200, errors=2)  # 2 of 10 calls per window fail
    opened = [a for a in alerts(database)]
    run_pass(database, BaselineCache(), now=NOW)
    opened = alerts(database)
    assert [(a.check, a.severity) for a in opened] == [("error_rate", "critical")]
    assert opened[0].evidence["error_rate"] == 0.2


def test_delayed_labels_raise_a_performance_alert(database: Database, dataset_id: str,  # noqa: F811
                                                  baseline: Baseline) -> None:  # noqa: F811
    from control_plane.drift.schemas import LabelsCreate
    from control_plane.telemetry.service import post_labels

    register_version(database, accuracy=0.95)
    configure(database, raise_after=1)
    feed(database, baseline, NOW - 1200, devices=1, count=3)
    labels = LabelsCreate.model_validate({"labels": [
        {"device_id": "dev-0", "window_seq": seq, "confusion": [[0, 0, 150], [1, 0, 50]]} for seq in (1, 2, 3)]})
    with database.transaction() as session:
        assert post_labels(session=session, request=labels, actor="test").stored == 3
    run_pass(database, BaselineCache(), now=NOW)
    (alert,) = alerts(database)
    assert alert.check == "performance" and alert.evidence["accuracy"] == 0.75
    assert abs(alert.evidence["floor"] - 0.90) < 1e-9


def test_cohort_evidence_builds_one_report_per_cohort_not_per_drifted_feature(
        database: Database, dataset_id: str, baseline: Baseline, monkeypatch: Any) -> None:  # noqa: F811
    configure(database, raise_after=1)
    feed(database, baseline, NOW - 1200, devices=4, shift={0: 50.0, 1: 50.0})
    with database.transaction() as session:
        session.execute(update(TelemetryWindowRow).values(device_group=case(
            (TelemetryWindowRow.device_id.in_(["dev-0", "dev-1"]), "north"), else_="south")))
    reports: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        reports.append(1)
        return detect_drift_sketch(*args, **kwargs)

    monkeypatch.setattr(monitor, "detect_drift_sketch", counting)
    outcomes = run_pass(database, BaselineCache(), now=NOW)
    drifted = {o.feature for o in outcomes if o.check == "feature_drift" and o.raising}
    assert len(drifted) >= 2
    # One fleet report and one per device group (windows without a rollout form no cohort), however many
    # features drifted: per feature, the 50-device demo's 60 drifted features cost a minute per pass.
    assert len(reports) == 1 + 2
    for alert in alerts(database):
        if alert.check == "feature_drift":
            assert set(alert.evidence["cohorts"]["device_group"]) == {"north", "south"}


def test_the_statistics_leave_sqlite_free_for_other_writers(database: Database, dataset_id: str,  # noqa: F811
                                                            baseline: Baseline, monkeypatch: Any) -> None:  # noqa: F811
    if not database.is_sqlite:
        pytest.skip("SQLite's single write lock; PostgreSQL locks rows")
    configure(database, raise_after=1)
    feed(database, baseline, NOW - 1200, shift={1: 50.0})
    path = make_url(database.url).database
    real = monitor.drift_findings
    writers: list[bool] = []

    def probing(*args: Any, **kwargs: Any) -> Any:
        # Another writer (the ingest, the fleet bridge, an API call) while the monitor computes.
        other = sqlite3.connect(str(path), timeout=0.2, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            writers.append(True)
        except sqlite3.OperationalError:
            writers.append(False)
        finally:
            other.close()
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor, "drift_findings", probing)
    run_pass(database, BaselineCache(), now=NOW)
    assert writers == [True]
    assert [a.feature for a in alerts(database) if a.check == "feature_drift"] == ["pressure"]

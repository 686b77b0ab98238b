"""Telemetry fixtures: the toy baseline registered as a dataset, an ingestor, a private tuned mosquitto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import WindowIngestor
from tests.control_plane.telemetry.simulate import make_baseline, register_baseline, register_model


@pytest.fixture(autouse=True)
def _no_background_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests drive the monitor themselves, so evaluations are counted exactly."""
    monkeypatch.setenv("EDGELOOP_TELEMETRY_MONITOR_ENABLED", "false")


@pytest.fixture(scope="session")
def baseline() -> Baseline:
    """The toy model's reference baseline."""
    return make_baseline()


@pytest.fixture
def dataset_id(database: Database, baseline: Baseline) -> str:
    """Register the baseline's dataset in the test database."""
    return register_baseline(database, baseline)


@pytest.fixture
def sensor_model(database: Database) -> None:
    """Register the toy model (version 1): windows of unregistered models are quarantined."""
    register_model(database)


@pytest.fixture
def ingestor(dataset_id: str, sensor_model: None) -> WindowIngestor:
    """An ingestor with a small burst so the rate limit is testable."""
    return WindowIngestor(TelemetrySettings(rate_per_second=1.0, rate_burst=50, max_message_bytes=64 * 1024,
                                            quarantine_payload_bytes=512))


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[PrivateMosquitto]:
    """A session-wide private mosquitto with the tuned limits."""
    broker = PrivateMosquitto(persistence=False, anonymous=True)
    broker.start()
    yield broker
    broker.close()

"""Build the telemetry ingest consumers and the drift monitor scheduler for an app."""

from __future__ import annotations

from fastapi import FastAPI

from control_plane.drift.monitor import MonitorScheduler
from control_plane.mqtt.connection import client_url
from control_plane.settings import Settings
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.consumer import TelemetryConsumer
from control_plane.telemetry.ingest import IngestResult
from control_plane.telemetry.lookup import BaselineCache
from control_plane.workers import Worker


def telemetry_workers(app: FastAPI, settings: Settings, config: TelemetrySettings | None = None) -> list[Worker]:
    """Return the monitor workers and, when an MQTT broker is configured, the ingest consumers."""
    config = config or TelemetrySettings()
    database = app.state.database
    app.state.baseline_cache = getattr(app.state, "baseline_cache", None) or BaselineCache()
    workers: list[Worker] = []
    scheduler: MonitorScheduler | None = None
    if config.monitor_enabled:
        scheduler = MonitorScheduler(database, interval=config.monitor_interval_seconds,
                                     ingest_interval=config.monitor_ingest_seconds,
                                     lookback=config.monitor_lookback_seconds, baselines=app.state.baseline_cache)
        app.state.drift_scheduler = scheduler
        workers += [scheduler.on_ingest, scheduler.full]

    def on_ingest(result: IngestResult) -> None:
        if scheduler is not None:
            scheduler.mark(result.models)

    consumers = []
    if settings.mqtt_url:
        consumers = [TelemetryConsumer(database, client_url(settings), config, name=f"telemetry-ingest-{i}",
                                       on_ingest=on_ingest) for i in range(config.consumers)]
    app.state.telemetry_consumers = consumers
    # Consumers start before and stop after the monitor workers (workers stop in reverse order).
    return [*consumers, *workers]

"""Run one TelemetryConsumer as its own process until killed: `python -m ... DB_URL MQTT_URL shared|durable`."""

from __future__ import annotations

import signal
import sys
import threading

from control_plane.db.session import Database
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.consumer import TelemetryConsumer


def main(database_url: str, mqtt_url: str, mode: str) -> None:
    """Consume until SIGTERM (or until SIGKILL, which is the point); print `ready` once subscribed."""
    config = TelemetrySettings(shared_subscription=mode == "shared", batch_wait_ms=20, monitor_enabled=False)
    # The same client id in every incarnation: a durable consumer resumes its persistent session.
    consumer = TelemetryConsumer(Database(database_url), mqtt_url, config, name="kill-test",
                                 client_id=f"kill-test-{mode}")
    consumer.start_sync(timeout=30)
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    consumer.stop_sync()


if __name__ == "__main__":
    main(*sys.argv[1:4])

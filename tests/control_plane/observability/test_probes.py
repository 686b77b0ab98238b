"""/healthz answers while the process lives; /readyz names the dependency (database, broker) that is down."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.settings import Settings


def test_ready_without_a_broker_configured(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "not configured"}


def test_a_broken_database_is_named(client: TestClient, tmp_path: Path) -> None:
    app_state = client.app.state  # type: ignore[attr-defined]
    working = app_state.database
    app_state.database = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'nope.db'}")
    try:
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        app_state.database = working
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["details"]["failed"] == ["database"], body
    assert body["error"]["details"]["checks"]["database"].startswith("failed: ")


def wait_for_status(client: TestClient, status: int, attempts: int = 200) -> dict[str, object]:
    """Poll /readyz until it answers ``status`` (paho reconnects on its own schedule)."""
    for _ in range(attempts):
        response = client.get("/readyz")
        if response.status_code == status:
            return dict(response.json())
        time.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}: {response.json()}")


def test_the_broker_connection_is_checked_when_mqtt_is_configured(settings: Settings, tmp_path: Path) -> None:
    broker = PrivateMosquitto(persistence=False).start()
    try:
        app = create_app(settings.model_copy(update=broker.settings_overrides()))
        with TestClient(app) as client:
            ready = wait_for_status(client, 200)
            assert ready["checks"] == {"database": "ok", "broker": "ok"}
            broker.stop()
            down = wait_for_status(client, 503)
            assert down["error"]["details"]["failed"] == ["broker"]  # type: ignore[index]
            assert "fleet-bridge" in down["error"]["details"]["checks"]["broker"]  # type: ignore[index]
            assert client.get("/healthz").status_code == 200
    finally:
        broker.close()

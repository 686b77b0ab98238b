"""Done-when: a simulated fleet with drift injected on one feature yields exactly one alert naming it.

20 devices each run edge_agent's WindowRecorder on the toy model's inputs, store windows in their own
edge_agent Outbox and publish them through a real private mosquitto; the control plane's ingest consumer
stores them and the drift monitor (scheduled and on ingest) raises the alert, end to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from control_plane.drift.baseline import Baseline
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.mqtt.topics import device_topic
from control_plane.settings import Settings
from edge_agent.outbox import Outbox, ack_topic, parse_ack
from tests.conftest import TokenFactory
from tests.control_plane.telemetry.simulate import FEATURES, MODEL, SimDevice, make_baseline

DEVICES = 20
CLEAN_WINDOWS = 3
DRIFTED_WINDOWS = 3
DRIFTED_FEATURE = "pressure"


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    instance = PrivateMosquitto(persistence=False, anonymous=True)
    instance.start()
    yield instance
    instance.close()


@pytest.fixture
def fleet_client(settings: Settings, broker: PrivateMosquitto, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The control plane with the MQTT ingest consumer and a fast monitor schedule."""
    monkeypatch.setenv("EDGELOOP_TELEMETRY_MONITOR_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("EDGELOOP_TELEMETRY_MONITOR_INGEST_SECONDS", "0.5")
    app = create_app(settings.model_copy(update={"mqtt_url": broker.url}))
    with TestClient(app) as client:
        yield client


class EdgeDevice:
    """A device's telemetry path: recorder -> outbox -> its own MQTT client."""

    def __init__(self, device_id: str, baseline: Baseline, outbox_dir: Path, port: int, start: float) -> None:
        self.device_id = device_id
        self.outbox = Outbox(outbox_dir / f"{device_id}.db")
        self.sim = SimDevice(device_id, baseline, self.outbox, seed=int(device_id[-2:]), start=start)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        self.client.on_publish = self._on_publish
        # Rows leave the outbox when the control plane confirms them, after its commit (not at the PUBACK).
        self.client.on_connect = lambda c, *_: c.subscribe(ack_topic(device_id), qos=1)
        self.client.message_callback_add(ack_topic(device_id), self._on_ack)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _rc: Any, _props: Any) -> None:
        self.outbox.ack(mid)

    def _on_ack(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.outbox.confirm(parse_ack(message.payload))

    def publish(self, payload: bytes) -> int | None:
        info = self.client.publish(device_topic(self.device_id, "telemetry"), payload, qos=1)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()


def test_drift_on_one_feature_raises_exactly_one_alert(fleet_client: TestClient, broker: PrivateMosquitto,
                                                       make_headers: TokenFactory, operator_headers: dict[str, str],
                                                       tmp_path: Path) -> None:
    client = fleet_client
    baseline = make_baseline()
    dataset = client.post("/api/v1/datasets", headers=operator_headers, json={
        "name": "sensors", "version": "1", "fingerprint": baseline.baseline_id, "baseline": baseline.to_dict()})
    assert dataset.status_code == 201, dataset.text
    client.post("/api/v1/models", json={"name": MODEL}, headers=operator_headers)
    version = client.post(f"/api/v1/models/{MODEL}/versions", json={}, headers=operator_headers).json()
    monitor = client.post("/api/v1/drift/monitors", headers=operator_headers, json={
        "model_name": MODEL, "model_version": 1, "config": {"raise_after": 2, "lookback_seconds": 3600}})
    assert monitor.status_code == 201, monitor.text

    start = time.time() - 1800
    devices = [EdgeDevice(f"dev-{i:02d}", baseline, tmp_path, broker.port, start) for i in range(DEVICES)]
    try:
        for device in devices:
            for _ in range(CLEAN_WINDOWS):
                device.sim.run_window()
            for _ in range(DRIFTED_WINDOWS):
                device.sim.run_window(shift={FEATURES.index(DRIFTED_FEATURE): 75.0})  # +1.5 reference std
        total = DEVICES * (CLEAN_WINDOWS + DRIFTED_WINDOWS)
        assert sum(len(d.outbox) for d in devices) == total

        def drain() -> bool:
            for device in devices:
                device.outbox.pump(device.publish)
            return sum(len(d.outbox) for d in devices) == 0

        wait_for(drain)
        viewer = make_headers("viewer")
        wait_for(lambda: client.get("/api/v1/telemetry/stats", headers=viewer).json()["windows"] == total)
        alerts = wait_for(lambda: client.get("/api/v1/alerts", headers=viewer).json()["items"])
        time.sleep(2.5)  # a few more scheduled passes: they must refresh the alert, not add others
        client.post("/api/v1/drift/evaluate", json={"model_name": MODEL}, headers=operator_headers)
        alerts = client.get("/api/v1/alerts", headers=viewer).json()
    finally:
        for device in devices:
            device.close()

    assert alerts["total"] == 1, [(a["check"], a["feature"]) for a in alerts["items"]]
    (alert,) = alerts["items"]
    assert (alert["check"], alert["feature"], alert["state"]) == ("feature_drift", DRIFTED_FEATURE, "open")
    assert alert["model_version_id"] == version["id"] and alert["monitor_id"] == monitor.json()["id"]
    assert alert["occurrences"] >= 2
    evidence = alert["evidence"]
    assert evidence["devices"] == DEVICES and evidence["windows"] == total
    assert evidence["drifted_features"] == [DRIFTED_FEATURE] and evidence["psi"] >= 0.2
    stats = client.get("/api/v1/telemetry/stats", headers=make_headers("viewer")).json()
    assert stats["quarantined"] == {}
    assert sum(p["duplicates"] for p in stats["process"].values()) == 0

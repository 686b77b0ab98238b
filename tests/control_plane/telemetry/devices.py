"""Devices as the edge agent ships telemetry: real windows in a real Outbox, one paho client each, confirmations."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from control_plane.drift.baseline import Baseline
from control_plane.mqtt.topics import device_topic
from edge_agent.outbox import Outbox, ack_topic, parse_ack
from tests.control_plane.telemetry.simulate import SimDevice


class OutboxDevice:
    """Record windows into an on-disk Outbox and pump them over MQTT; rows go only on the control plane's ack."""

    def __init__(self, device_id: str, baseline: Baseline, root: Path, port: int, *, windows: int,
                 ack_timeout_s: float = 2.0) -> None:
        self.device_id = device_id
        self.outbox = Outbox(root / f"{device_id}.db", max_inflight=20, ack_timeout_s=ack_timeout_s)
        sim = SimDevice(device_id, baseline, self.outbox, seed=int(device_id[-2:]), start=time.time() - 7200)
        for _ in range(windows):
            sim.run_window(rows=20)
        self.keys = {(device_id, seq) for seq in range(1, windows + 1)}
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_publish = self._on_publish
        self.client.message_callback_add(ack_topic(device_id), self._on_ack)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(ack_topic(self.device_id), qos=1)
        self.outbox.reset_inflight()
        self.connected.set()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _rc: Any, _props: Any) -> None:
        self.outbox.ack(mid)

    def _on_ack(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.outbox.confirm(parse_ack(message.payload))

    def released(self) -> set[tuple[str, int]]:
        """Return the windows this device has let go of (confirmed by the control plane)."""
        kept = {item.window_seq for item in self.outbox.peek(len(self.keys) + 1, include_inflight=True)}
        return {key for key in self.keys if key[1] not in kept}

    def publish(self, payload: bytes) -> int | None:
        info = self.client.publish(device_topic(self.device_id, "telemetry"), payload, qos=1)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def pump(self) -> None:
        if self.connected.is_set():
            self.outbox.pump(self.publish)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()


class Pumper:
    """Pump every device's outbox in the background, as each agent's telemetry loop does."""

    def __init__(self, devices: list[OutboxDevice], interval_s: float = 0.02) -> None:
        self.devices = devices
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Pumper:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for device in self.devices:
                device.pump()

    def pending(self) -> int:
        """Return windows still waiting in the outboxes (not confirmed by the control plane)."""
        return sum(len(device.outbox) for device in self.devices)

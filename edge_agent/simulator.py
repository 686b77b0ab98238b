"""Fleet simulator: N real agents (real MQTT connections, real HTTP downloads) in one process.

One thread drives every paho client through an epoll selector using loop_read/loop_write/loop_misc
(paho's own loop uses select(), which breaks past ~1,000 descriptors). OTA work runs on a small
thread pool. Shared per process, keyed by artifact sha256: the verified artifact file (hard-linked
into each device's slot) and the onnxruntime session. Not shared: each device's MQTT connection,
state dir, anti-replay sequence record, trial/commit files, self-test, and its own HTTP GET of the
artifact with its own token, streamed through its own size cap and sha256 check.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from edge_agent.config import EdgeConfig
from edge_agent.fleet_loop import FleetLoop, SharedArtifacts, raise_fd_limit
from edge_agent.inference import InferenceEngine
from edge_agent.manifest import load_public_key
from edge_agent.mqtt import device_topic, make_client, presence_payload
from edge_agent.ota import OtaUpdater
from edge_agent.slots import SlotStore
from edge_agent.telemetry import WindowRecorder

log = logging.getLogger(__name__)


@dataclass
class SimDevice:
    """One simulated device: its own state dir, engine, updater and MQTT client."""

    config: EdgeConfig
    slots: SlotStore
    engine: InferenceEngine
    client: mqtt.Client
    updater: OtaUpdater | None = None
    connected: bool = False
    backoff_s: float = 0.5
    last_status: dict[str, Any] | None = None
    inbox: deque[bytes] = field(default_factory=deque)
    busy: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    extra_topics: set[str] = field(default_factory=set)  # blue-green cut-over topics of staged rollouts
    recorder: WindowRecorder | None = None


@dataclass
class TelemetryFeed:
    """Opt-in telemetry: what each simulated device's active model sees, recorded as real windows.

    Every ``interval_s`` each device with an active model predicts on ``inputs(device_id)`` with its real
    onnxruntime session; the engine feeds a WindowRecorder built from the manifest's baseline, and closed windows
    go out on the device's telemetry topic. ``fault(device_id, model)`` is the share of calls that fail (a
    simulated on-device fault; those calls are recorded as errors, as the engine records a raising model).
    """

    inputs: Callable[[str], np.ndarray]
    window_seconds: float = 60.0
    interval_s: float = 1.0
    fault: Callable[[str, dict[str, Any]], float] | None = None


class _MqttWindowSink:
    """A TelemetrySink that publishes each closed window on the device's telemetry topic (QoS 1)."""

    def __init__(self, publish: Callable[[bytes], None]) -> None:
        self._publish = publish
        self._seq = time.time_ns() // 1_000_000  # grows across restarts, as the ingest's dedup expects

    def next_window_seq(self) -> int:
        self._seq += 1
        return self._seq

    def take_dropped(self) -> int:
        return 0

    def put(self, message: dict[str, Any]) -> None:
        self._publish(json.dumps(message, separators=(",", ":")).encode())


class Fleet:
    """Run simulated devices until stopped; all MQTT I/O happens on one loop thread."""

    def __init__(self, configs: list[EdgeConfig], *, shared_root: Path, workers: int = 4,
                 telemetry: TelemetryFeed | None = None) -> None:
        self.telemetry = telemetry
        self._telemetry_stop = threading.Event()
        self._rng = np.random.default_rng()
        self.fd_limit = raise_fd_limit()
        self.loop = FleetLoop()
        self.shared = SharedArtifacts(shared_root)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-ota")
        keys = {spec: load_public_key(spec) for spec in {c.trusted_public_key for c in configs}}
        self.devices: dict[str, SimDevice] = {}
        for config in configs:
            device = SimDevice(config, SlotStore(config.state_dir), InferenceEngine(), make_client(config))
            device.updater = OtaUpdater(
                config=config, key=keys[config.trusted_public_key], slots=device.slots, engine=device.engine,
                emit=self._emitter(device), artifacts=self.shared, on_activated=self._presence_refresher(device),
                on_staged=self._cutover_listener(device), schedule=self._schedule,
            )
            self._wire(device)
            self.devices[config.device_id] = device
        self._thread = threading.Thread(target=self.loop.run, name="sim-loop", daemon=True)
        self._telemetry_thread = threading.Thread(target=self._telemetry_loop, name="sim-telemetry", daemon=True)

    def _emitter(self, device: SimDevice) -> Callable[[dict[str, Any]], None]:
        return lambda event: self._emit(device, event)

    def _cutover_listener(self, device: SimDevice) -> Callable[[str], None]:
        def listen(topic: str) -> None:
            device.extra_topics.add(topic)
            if device.connected:
                self.loop.call_soon(lambda: self._subscribe(device, topic))
        return listen

    @staticmethod
    def _subscribe(device: SimDevice, topic: str) -> None:
        device.client.subscribe(topic, qos=1)

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        def submit() -> None:
            self.pool.submit(fn)
        self.loop.call_soon(lambda: self.loop.call_later(delay, submit))

    def _presence_refresher(self, device: SimDevice) -> Callable[[dict[str, Any]], None]:
        def refresh(record: dict[str, Any]) -> None:
            self._attach_recorder(device, record)
            self._publish_presence(device, True)

        return refresh

    def _attach_recorder(self, device: SimDevice, record: dict[str, Any] | None) -> None:
        """Record what the newly active model sees (the old model's open window closes under its own name)."""
        if self.telemetry is None:
            return
        old, device.recorder = device.recorder, None
        if old is not None:
            old.close_window()
        model = (record or {}).get("model") or {}
        if not record or not record.get("baseline"):
            return
        sink = _MqttWindowSink(lambda payload: self._publish(device, "telemetry", payload))
        try:
            device.recorder = WindowRecorder(record["baseline"], device_id=device.config.device_id,
                                             model_name=str(model.get("name", "")),
                                             model_version=int(model.get("version", 0)), sink=sink,
                                             window_seconds=self.telemetry.window_seconds,
                                             shadow=device.engine.take_shadow_sketch)
        except ValueError as exc:
            log.warning("%s: unusable baseline (%s); telemetry is off for it", device.config.device_id, exc)
            return
        device.engine.set_recorder(device.recorder)

    def _telemetry_loop(self) -> None:
        feed = self.telemetry
        assert feed is not None
        while not self._telemetry_stop.wait(feed.interval_s):
            for device in list(self.devices.values()):
                try:
                    self._infer(feed, device)
                except Exception:  # one device's bad step must not stop the others' telemetry
                    log.exception("%s: telemetry step failed", device.config.device_id)

    def _infer(self, feed: TelemetryFeed, device: SimDevice) -> None:
        recorder = device.recorder
        if recorder is None or device.engine.runtime is None:
            return
        batch = feed.inputs(device.config.device_id)
        model = {"name": recorder.model_name, "version": recorder.model_version}
        if feed.fault is not None and self._rng.random() < feed.fault(device.config.device_id, model):
            recorder.observe(batch, np.empty(0), None, 0.0, True)
        else:
            device.engine.predict(batch)
        recorder.tick()

    def _wire(self, device: SimDevice) -> None:
        client = device.client
        self.loop.attach(client)
        manifest_topic = device_topic(device.config.device_id, "manifest")

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
            if reason_code.is_failure:
                return
            device.connected = True
            device.backoff_s = device.config.reconnect_min_s
            c.subscribe(manifest_topic, qos=1)
            for topic in list(device.extra_topics):
                c.subscribe(topic, qos=1)
            self._publish_presence(device, True)

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
            device.connected = False
            if not self.loop.stopping.is_set():
                self._schedule_connect(device)

        def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            if message.topic == manifest_topic and message.payload:  # empty: a cleared retained manifest
                self._enqueue(device, bytes(message.payload))
            elif message.topic in device.extra_topics and message.payload and device.updater is not None:
                self.pool.submit(device.updater.blue_green.offer, bytes(message.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        info = device.slots.active() or {}
        will = presence_payload(device.config.device_id, False, info.get("model"), info.get("slot"))
        client.will_set(device_topic(device.config.device_id, "presence"), will, qos=1, retain=True)
        client.connect_async(device.config.broker_host, device.config.broker_port, device.config.keepalive_s)

    def _connect(self, device: SimDevice) -> None:
        try:
            device.client.reconnect()
        except OSError as exc:
            log.debug("%s: connect failed (%s)", device.config.device_id, exc)
            self._schedule_connect(device)

    def _schedule_connect(self, device: SimDevice) -> None:
        delay = device.backoff_s
        device.backoff_s = min(device.backoff_s * 2, device.config.reconnect_max_s)
        self.loop.call_later(delay, lambda: self._connect(device))

    def _publish(self, device: SimDevice, kind: str, payload: bytes, retain: bool = False) -> None:
        topic = device_topic(device.config.device_id, kind)

        def send() -> None:
            device.client.publish(topic, payload, qos=1, retain=retain)

        self.loop.call_soon(send)

    def _publish_presence(self, device: SimDevice, online: bool) -> None:
        info = device.slots.active() or {}
        payload = presence_payload(device.config.device_id, online, info.get("model"), info.get("slot"))
        self._publish(device, "presence", payload, retain=True)
        will = presence_payload(device.config.device_id, False, info.get("model"), info.get("slot"))
        device.client.will_set(device_topic(device.config.device_id, "presence"), will, qos=1, retain=True)

    def _emit(self, device: SimDevice, event: dict[str, Any]) -> None:
        device.last_status = event
        self._publish(device, "status", json.dumps(event).encode())

    def _enqueue(self, device: SimDevice, message: bytes) -> None:
        with device.lock:
            device.inbox.append(message)
            if device.busy:
                return
            device.busy = True
        self.pool.submit(self._drain, device)

    def _drain(self, device: SimDevice) -> None:
        # One job per device at a time, so a device applies its manifests in arrival order.
        assert device.updater is not None
        while True:
            with device.lock:
                if not device.inbox:
                    device.busy = False
                    return
                message = device.inbox.popleft()
            device.updater.handle(message)

    def start(self) -> None:
        """Boot every device from its state dir, then connect them all."""
        for device in self.devices.values():
            assert device.updater is not None
            device.updater.boot()
            self._attach_recorder(device, device.slots.active())
        self._thread.start()
        if self.telemetry is not None:
            self._telemetry_thread.start()
        for device in self.devices.values():
            self.loop.call_soon(self._connector(device))

    def _connector(self, device: SimDevice) -> Callable[[], None]:
        return lambda: self._connect(device)

    def stop(self) -> None:
        """Disconnect every device and stop the loop and the pool."""
        done = threading.Event()
        self._telemetry_stop.set()

        def disconnect_all() -> None:
            self.loop.stopping.set()
            for device in self.devices.values():
                device.client.disconnect()
            done.set()

        self.loop.call_soon(disconnect_all)
        done.wait(10)
        self.loop.stop()
        self._thread.join(10)
        if self._telemetry_thread.is_alive():
            self._telemetry_thread.join(10)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def snapshot(self) -> dict[str, Any]:
        """Summarise the fleet: connections, active models and last status states/reasons."""
        states = Counter(d.last_status["state"] for d in self.devices.values() if d.last_status)
        reasons = Counter(d.last_status["reason"] for d in self.devices.values()
                          if d.last_status and d.last_status["reason"])
        models = Counter(
            f"{r['model'].get('name')}@{r['model'].get('version')}" if r else "none"
            for r in (d.slots.active() for d in self.devices.values())
        )
        return {
            "devices": len(self.devices), "connected": sum(d.connected for d in self.devices.values()),
            "last_states": dict(states), "reasons": dict(reasons), "active_models": dict(models),
            "sessions_loaded": self.shared.sessions_created, "fd_limit": self.fd_limit,
        }

    def wait_until(self, predicate: Any, timeout_s: float) -> bool:
        """Poll predicate(self) until it is true or timeout_s passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return bool(predicate(self))


def fleet_configs(
    *, devices: int, template: EdgeConfig, state_root: Path, prefix: str = "sim-", token: str = "{device_id}",
    tokens: Mapping[str, str] | None = None, broker_passwords: Mapping[str, str] | None = None,
) -> list[EdgeConfig]:
    """Derive N device configs from one template; real per-device tokens in ``tokens`` win over the template.

    With ``broker_passwords`` each device logs in to the broker as itself (username = device id), as a real one
    does; the broker's ACL then confines it to its own topics.
    """
    configs = []
    for index in range(devices):
        device_id = f"{prefix}{index:05d}"
        device_token = tokens[device_id] if tokens and device_id in tokens else token.format(device_id=device_id)
        login: dict[str, Any] = {}
        if broker_passwords is not None:
            login = {"broker_username": device_id, "broker_password": broker_passwords.get(device_id)}
        configs.append(replace(template, device_id=device_id, device_token=device_token,
                               state_dir=state_root / device_id, **login))
    return configs


def run_fleet(
    *,
    devices: int,
    template: EdgeConfig,
    state_root: Path,
    duration_s: float = 60.0,
    prefix: str = "sim-",
    token: str = "{device_id}",
    tokens: Mapping[str, str] | None = None,
    broker_passwords: Mapping[str, str] | None = None,
    workers: int = 4,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run N simulated devices for duration_s (or until stop is set) and return the final snapshot."""
    configs = fleet_configs(devices=devices, template=template, state_root=state_root, prefix=prefix, token=token,
                            tokens=tokens, broker_passwords=broker_passwords)
    fleet = Fleet(configs, shared_root=state_root / "_shared", workers=workers)
    started = time.monotonic()
    fleet.start()
    connected_at = None
    try:
        deadline = started + duration_s
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            if connected_at is None and fleet.snapshot()["connected"] == devices:
                connected_at = time.monotonic() - started
            time.sleep(0.1)
    finally:
        report = fleet.snapshot()
        fleet.stop()
    return {**report, "all_connected_after_s": connected_at, "ran_s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m edge_agent.simulator --devices N --broker-url ... --public-key ..."""
    parser = argparse.ArgumentParser(prog="python -m edge_agent.simulator")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--broker-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--control-plane-url", default="http://127.0.0.1:8000")
    parser.add_argument("--public-key", required=True, help="trusted ed25519 key (file or base64 raw)")
    parser.add_argument("--token", default="{device_id}", help="device token; {device_id} is substituted")
    parser.add_argument("--broker-passwords", type=Path, default=None,
                        help="JSON file {device_id: broker password}: each device logs in as itself")
    parser.add_argument("--state-root", type=Path, default=Path(".edgeloop/sim"))
    parser.add_argument("--prefix", default="sim-")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    template = EdgeConfig(device_id="template", device_token="", broker_url=args.broker_url,
                          control_plane_url=args.control_plane_url, state_dir=args.state_root,
                          trusted_public_key=args.public_key)
    passwords = json.loads(args.broker_passwords.read_text()) if args.broker_passwords else None
    report = run_fleet(devices=args.devices, template=template, state_root=args.state_root,
                       duration_s=args.duration, prefix=args.prefix, token=args.token, workers=args.workers,
                       broker_passwords=passwords)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

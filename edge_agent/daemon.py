"""The edge agent process: boot, connect, apply manifests on a worker thread, serve predictions."""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from edge_agent.config import EdgeConfig
from edge_agent.inference import InferenceEngine, TelemetryRecorder
from edge_agent.manifest import load_public_key
from edge_agent.mqtt import MqttLink, device_topic, presence_payload
from edge_agent.ota import PAUSE_POINTS, OtaUpdater
from edge_agent.slots import SlotStore

log = logging.getLogger(__name__)
ActivationListener = Callable[[dict[str, Any]], None]


class EdgeAgent:
    """One device: state dir, inference engine, OTA updater and MQTT link wired together."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        recorder: TelemetryRecorder | None = None,
        pause_at: str | None = None,
        crash_on_sha256: str | None = None,
    ) -> None:
        if pause_at is not None and pause_at not in PAUSE_POINTS:
            raise ValueError(f"pause_at must be one of {PAUSE_POINTS}")
        self.config = config
        self.started_at = time.monotonic()
        self.slots = SlotStore(config.state_dir)
        self.engine = InferenceEngine(recorder)
        self._listeners: list[ActivationListener] = []
        self._manifests: queue.Queue[bytes | None] = queue.Queue()
        self.updater = OtaUpdater(
            config=config, key=load_public_key(config.trusted_public_key), slots=self.slots,
            engine=self.engine, emit=self._emit_status, pause_at=pause_at, on_activated=self._activated,
            crash_on_sha256=crash_on_sha256, on_staged=self._listen_for_cutover,
        )
        self.link = MqttLink(config, on_manifest=self._on_manifest, presence=self._presence)
        self._worker = threading.Thread(target=self._work, name="edge-ota", daemon=True)
        # Cut-overs get their own worker so a command is never parsed on paho's network thread.
        self._cutovers: queue.Queue[bytes | None] = queue.Queue()
        self._cutover_worker = threading.Thread(target=self._work_cutovers, name="edge-cutover", daemon=True)
        self.http: ThreadingHTTPServer | None = None

    def describe(self) -> dict[str, Any]:
        """Return the device id, active model and slot."""
        active = self.slots.active()
        return {"device_id": self.config.device_id, "model": active.get("model") if active else None,
                "slot": active.get("slot") if active else None}

    def active_record(self) -> dict[str, Any] | None:
        """Return the committed active record (model, slot, sha256, baseline, telemetry settings)."""
        return self.slots.active()

    def add_activation_listener(self, listener: ActivationListener) -> None:
        """Call listener(active_record) after each activation (e.g. to reset telemetry baselines)."""
        self._listeners.append(listener)

    def publish_telemetry(self, window: dict[str, Any] | bytes) -> int | None:
        """Publish one telemetry window (QoS 1; queued while offline); return paho's mid or None."""
        payload = window if isinstance(window, bytes) else json.dumps(window).encode()
        return self.link.publish(device_topic(self.config.device_id, "telemetry"), payload)

    def add_publish_listener(self, listener: Callable[[int], object]) -> None:
        """Call listener(mid) on paho's network thread when the broker PUBACKs a publish (e.g. outbox.ack)."""
        self.link.publish_listeners.append(listener)

    def add_connect_listener(self, listener: Callable[[], None]) -> None:
        """Call listener() on paho's network thread after every (re)connect (e.g. to pump an outbox)."""
        self.link.connect_listeners.append(listener)

    def start(self) -> None:
        """Resolve interrupted updates, load the model, then connect and start serving."""
        retry = self.updater.boot()
        if retry is not None:
            self._manifests.put(retry)  # An update a crash cut short; the worker backs off before it.
        self._worker.start()
        self._cutover_worker.start()
        self.link.start()
        if self.config.predict_port is not None:
            from edge_agent.http_api import serve_predict  # lazy: devices without the endpoint skip http.server

            self.http = serve_predict(self.engine, self.config.predict_port, self.describe)
        log.info("edge agent %s ready in %.3fs", self.config.device_id, time.monotonic() - self.started_at)

    def stop(self) -> None:
        """Stop serving, say goodbye on MQTT and stop the worker."""
        if self.http is not None:
            self.http.shutdown()
        self.link.stop()
        self._manifests.put(None)
        self._cutovers.put(None)
        self._worker.join(timeout=5)

    def run_forever(self, *, on_start: Callable[[], None] | None = None,
                    on_stop: Callable[[], None] | None = None) -> None:
        """Run until SIGINT/SIGTERM; on_start/on_stop run companions such as the telemetry loop."""
        done = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        self.start()
        if on_start is not None:
            on_start()
        done.wait()
        if on_stop is not None:
            on_stop()
        self.stop()

    def _on_manifest(self, message: bytes) -> None:
        # On paho's thread: a newer manifest cancels a slow download now instead of queueing behind it.
        self.updater.offer(message)
        self._manifests.put(message)

    def _listen_for_cutover(self, topic: str) -> None:
        self.link.subscribe_extra(topic, self._cutovers.put)

    def _work_cutovers(self) -> None:
        while (message := self._cutovers.get()) is not None:
            self.updater.blue_green.offer(message)

    def _emit_status(self, event: dict[str, Any]) -> None:
        self.link.publish(device_topic(self.config.device_id, "status"), json.dumps(event).encode())

    def _presence(self, online: bool) -> bytes:
        info = self.describe()
        return presence_payload(self.config.device_id, online, info["model"], info["slot"])

    def _activated(self, record: dict[str, Any]) -> None:
        self.link.publish_presence()
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("activation listener failed")

    def _work(self) -> None:
        while (message := self._manifests.get()) is not None:
            try:
                self.updater.handle(message)
            except Exception:
                # handle() reports its own errors; this only keeps the worker alive for the next manifest.
                log.exception("manifest worker error")

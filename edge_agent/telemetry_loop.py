"""Ship telemetry: one window recorder per active model, windows through the on-disk outbox until confirmed.

A window leaves the outbox when the control plane confirms it on `edgeloop/devices/{id}/telemetry/ack`
(after its batch committed), not at the broker's PUBACK: a consumer that dies after the PUBACK would
otherwise lose it. Unconfirmed windows are sent again after `ack_timeout_s`; the control plane deduplicates.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edge_agent.daemon import EdgeAgent
from edge_agent.inference import NullRecorder
from edge_agent.outbox import Outbox, ack_topic, parse_ack
from edge_agent.telemetry import WindowRecorder

log = logging.getLogger(__name__)


class TelemetryLoop:
    """Record what the active model sees, close windows on time, and publish them in order."""

    def __init__(self, agent: EdgeAgent, *, interval_s: float = 1.0, ack_timeout_s: float = 30.0) -> None:
        config = agent.config
        self.agent = agent
        self.interval_s = interval_s
        self.outbox = Outbox(config.state_dir / "telemetry-outbox.sqlite", max_windows=config.telemetry_queue_windows,
                             ack_timeout_s=ack_timeout_s)
        self.ack_topic = ack_topic(config.device_id)
        self.recorder: WindowRecorder | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-telemetry", daemon=True)
        agent.add_activation_listener(self._on_activation)
        agent.add_publish_listener(self.outbox.ack)
        agent.add_connect_listener(self._on_connect)
        # Routed by paho before on_message, so the link's own handler never sees confirmations.
        agent.link.client.message_callback_add(self.ack_topic, self._on_ack)

    def start(self) -> None:
        """Attach to the model that is active now, then tick and pump in the background."""
        record = self.agent.active_record()
        if record is not None:
            self._on_activation(record)
        if self.agent.link.connected.is_set():  # connected before this loop registered its connect listener
            self.agent.link.client.subscribe(self.ack_topic, qos=1)
        self._thread.start()

    def stop(self) -> None:
        """Close the open window into the outbox (it is sent after the next start) and stop."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            if self.recorder is not None:
                self.recorder.close_window()
        self.outbox.close()

    def _on_activation(self, record: dict[str, Any]) -> None:
        baseline = record.get("baseline")
        model = record.get("model") or {}
        window_s = float((record.get("telemetry") or {}).get("window_seconds", self.agent.config.telemetry_window_s))
        with self._lock:
            if self.recorder is not None:
                self.recorder.close_window()  # the old model's last window keeps the old model's name
            if not baseline:
                # Without a baseline there are no reference bins to count against: say so, send nothing.
                log.warning("model %s has no baseline in its manifest; telemetry is off for it", model)
                self.recorder = None
                self.agent.engine.set_recorder(NullRecorder())
                return
            try:
                self.recorder = WindowRecorder(
                    baseline, device_id=self.agent.config.device_id, model_name=str(model.get("name", "")),
                    model_version=int(model.get("version", 0)), sink=self.outbox, window_seconds=window_s,
                    shadow=self.agent.engine.take_shadow_sketch,
                )
            except ValueError as exc:
                log.error("unusable baseline for %s (%s); telemetry is off for it", model, exc)
                self.recorder = None
                self.agent.engine.set_recorder(NullRecorder())
                return
            self.agent.engine.set_recorder(self.recorder)

    def _on_connect(self) -> None:
        # A new session does not retransmit the old one's unacknowledged publishes: send them again. Clean
        # sessions also forget subscriptions: subscribe to confirmations first, so none of this session's is missed.
        self.agent.link.client.subscribe(self.ack_topic, qos=1)
        self.outbox.reset_inflight()

    def _on_ack(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            self.outbox.confirm(parse_ack(bytes(message.payload)))
        except Exception:  # on paho's network thread: never let one bad message stop it
            log.exception("telemetry confirmation failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    recorder = self.recorder
                if recorder is not None:
                    recorder.tick()
                if self.agent.link.connected.is_set():
                    self.outbox.pump(self.agent.publish_telemetry)
            except Exception:  # telemetry must never take inference down with it
                log.exception("telemetry tick failed")

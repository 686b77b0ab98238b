"""Telemetry and monitor tunables, read from EDGELOOP_TELEMETRY_* variables when the app is built."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseSettings):
    """Ingest limits, batching and monitor schedule of one control-plane process."""

    model_config = SettingsConfigDict(env_prefix="EDGELOOP_TELEMETRY_", env_file=".env", extra="ignore")

    max_message_bytes: int = Field(default=256 * 1024, gt=0, description="Larger messages are quarantined.")
    quarantine_payload_bytes: int = Field(default=4096, ge=0, description="Raw payload kept per quarantined message.")
    clock_skew_seconds: float = Field(default=300.0, ge=0, description="Windows ending later than now + this.")
    max_age_seconds: float = Field(default=7 * 86400.0, gt=0, description="Windows ending earlier than now - this.")
    max_window_seconds: float = Field(default=86400.0, gt=0, description=(
        "Longest window (window_end - window_start) accepted; a longer one is quarantined (implausible_time)."))
    require_registered_model: bool = Field(default=True, description=(
        "Quarantine windows whose (model name, version) is not in the registry (reason unknown_model)."))
    poison_attempts: int = Field(default=3, ge=1, description=(
        "Times the consumer retries a message that keeps failing on its own before it quarantines it."))
    device_acks: bool = Field(default=True, description=(
        "After each commit, publish to edgeloop/devices/<id>/telemetry/ack the window_seqs the batch settled"
        " (stored, duplicate or quarantined), so devices keep a window until the control plane has it."))
    rate_per_second: float = Field(default=2.0, gt=0, description="Sustained windows/s one device may send.")
    rate_burst: float = Field(default=600.0, ge=1, description="Windows a device may send at once (outage catch-up).")
    batch_size: int = Field(default=500, ge=1, description="Most messages per ingest transaction.")
    batch_wait_ms: float = Field(default=20.0, gt=0, description="Longest wait before a partial batch is written.")
    receive_maximum: int = Field(default=0, ge=0, le=65_535, description=(
        "Unacknowledged windows the broker may send one consumer (MQTT 5 Receive Maximum); it bounds a"
        " manually acknowledged batch. 0: twice batch_size, so the next batch arrives while one is written."))
    consumers: int = Field(default=1, ge=0, description="MQTT ingest consumers in this process (shared subscription).")
    manual_ack: bool = Field(default=True, description="PUBACK only after the batch is committed (at-least-once).")
    session_expiry_seconds: int = Field(default=3600, ge=0, description=(
        "MQTT 5 session the broker keeps while a durable (non-shared) consumer is away (0: clean sessions)."
        " With a stable client id, windows published during a consumer or broker restart wait in it."))
    shared_subscription: bool = Field(default=True, description=(
        "Subscribe via $share (clean sessions) so consumers and replicas split the load; windows published"
        " while every consumer is away are lost. False: one consumer with a plain subscription in a persistent"
        " session, which the broker queues for across consumer and broker restarts."))
    client_id_prefix: str = Field(default="edgeloop-ingest", description="Consumer client ids: prefix-host-name.")
    monitor_enabled: bool = Field(default=True, description="Run the drift monitor scheduler in this process.")
    monitor_interval_seconds: float = Field(default=60.0, gt=0, description="Full monitor pass period.")
    monitor_ingest_seconds: float = Field(default=5.0, gt=0, description="Period of the pass over fresh models.")
    monitor_lookback_seconds: float = Field(default=3600.0, gt=0, description="Windows a monitor evaluates.")

"""Edge agent configuration: a TOML file overridden by EDGELOOP_EDGE_* environment variables."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ENV_PREFIX = "EDGELOOP_EDGE_"
PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")
DEFAULT_MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is missing or invalid."""


@dataclass(frozen=True)
class EdgeConfig:
    """Everything one device needs to run; immutable once loaded."""

    device_id: str
    device_token: str
    broker_url: str
    control_plane_url: str
    state_dir: Path
    trusted_public_key: str
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    predict_port: int | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    download_attempts: int = 6
    download_backoff_s: float = 0.2
    download_timeout_s: float = 10.0
    telemetry_queue_windows: int = 10_000
    telemetry_window_s: float = 60.0
    # OTA bounds (docs/edge-agent.md#bounded-updates): a download must average this rate after the grace.
    download_min_rate_bps: float = 4096.0
    download_grace_s: float = 60.0
    ota_max_attempts: int = 3
    ota_retry_backoff_s: float = 2.0
    manifest_max_validity_s: float = 30 * 86_400.0
    manifest_clock_skew_s: float = 300.0
    # Broker login (username = device id, issued at provisioning) and TLS for mqtts:// URLs.
    broker_username: str | None = None
    broker_password: str | None = None
    broker_ca_file: Path | None = None
    broker_client_cert: Path | None = None
    broker_client_key: Path | None = None

    @property
    def broker_host(self) -> str:
        """Return the broker host parsed from broker_url."""
        return urlparse(self.broker_url).hostname or "127.0.0.1"

    @property
    def broker_tls(self) -> bool:
        """Return whether broker_url asks for TLS (mqtts:// or ssl://)."""
        return urlparse(self.broker_url).scheme in TLS_SCHEMES

    @property
    def broker_port(self) -> int:
        """Return the broker port parsed from broker_url (1883, or 8883 with TLS, if absent)."""
        return urlparse(self.broker_url).port or (8883 if self.broker_tls else 1883)


_REQUIRED = (
    "device_id", "device_token", "broker_url", "control_plane_url", "state_dir", "trusted_public_key",
)


def _coerce(field: dataclasses.Field[Any], raw: Any) -> Any:
    """Convert a TOML/env value to the field's declared type."""
    kind = str(field.type)
    if raw is None:
        return None
    if "Path" in kind:
        return Path(str(raw)).expanduser()
    if kind.startswith("int"):
        return None if raw == "" else int(raw)
    if kind.startswith("float"):
        return float(raw)
    return str(raw)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> EdgeConfig:
    """Load config from a TOML file (optional) and apply EDGELOOP_EDGE_<FIELD> overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        values.update(data.get("edge", data))
    fields = {f.name: f for f in dataclasses.fields(EdgeConfig)}
    for name in fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config keys: {sorted(unknown)}")
    missing = [name for name in _REQUIRED if not values.get(name)]
    if missing:
        raise ConfigError(f"missing config: {missing} (set them in the TOML file or {ENV_PREFIX}<NAME>)")
    try:
        kwargs = {name: _coerce(fields[name], raw) for name, raw in values.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config value: {exc}") from exc
    config = EdgeConfig(**kwargs)
    if urlparse(config.broker_url).scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
        raise ConfigError("broker_url must look like mqtt://host:port or mqtts://host:port")
    if not config.broker_tls and (config.broker_ca_file or config.broker_client_cert or config.broker_client_key):
        raise ConfigError("broker_ca_file and client certificates need an mqtts:// broker_url")
    if bool(config.broker_client_cert) != bool(config.broker_client_key):
        raise ConfigError("a client certificate needs both broker_client_cert and broker_client_key")
    if config.broker_password is not None and not config.broker_username:
        raise ConfigError("broker_password needs broker_username")
    if config.max_artifact_bytes <= 0:
        raise ConfigError("max_artifact_bytes must be positive")
    if not (config.download_min_rate_bps > 0 and config.download_grace_s >= 0 and config.ota_max_attempts >= 1
            and config.ota_retry_backoff_s >= 0 and config.manifest_max_validity_s > 0
            and config.manifest_clock_skew_s >= 0):
        raise ConfigError("download/OTA/manifest bounds must be positive (ota_max_attempts at least 1)")
    if config.telemetry_queue_windows <= 0 or config.telemetry_window_s <= 0:
        raise ConfigError("telemetry_queue_windows and telemetry_window_s must be positive")
    return config

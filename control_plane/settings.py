"""Control-plane settings, read from EDGELOOP_* environment variables (never at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All tunables of one control-plane process."""

    model_config = SettingsConfigDict(env_prefix="EDGELOOP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".edgeloop"), description="Artifacts, keys and the SQLite database.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite (WAL) under data_dir."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(default=None, description="Base URL devices use to reach this API.")

    max_artifact_bytes: int = 256 * 1024 * 1024
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, description=(
        "Largest request body, counted while it is read (413 past it); see docs/api-limits.md."))
    max_bulk_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description=(
        "Largest body of the bulk routes (telemetry windows and labels, exact drift, datasets)."))
    audit_checkpoint_seconds: float = Field(default=60.0, gt=0, description="How often to sign the audit head.")
    audit_key_path: Path | None = None
    signing_key_path: Path | None = None

    mqtt_url: str | None = Field(default=None, description="mqtt://host:port; no bridge when unset.")
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_public_url: str | None = Field(default=None, description="Broker URL given to devices (default mqtt_url).")
    manifest_ttl_seconds: int = Field(default=86_400, gt=0, description="Signed manifests expire after this.")
    fleet_step_seconds: float = Field(default=1.0, gt=0, description="How often rollouts are advanced.")
    fleet_self_test_rows: int = Field(default=8, ge=1, le=256)
    fleet_self_test_max_latency_ms: float = Field(default=250.0, gt=0)
    chroma_url: str | None = None
    retention_telemetry_days: float = Field(default=30.0, ge=0, description=(
        "Telemetry windows and labels older than this are purged (0: keep forever). Must exceed the ingest's"
        " max window age, so duplicate detection still sees the first copy."))
    retention_quarantine_days: float = Field(default=14.0, ge=0, description="Quarantined messages (0: keep).")
    retention_device_events_days: float = Field(default=90.0, ge=0, description="Device status/presence (0: keep).")
    retention_interval_seconds: float = Field(default=3600.0, gt=0, description="How often the purge runs.")
    retention_batch_size: int = Field(default=5000, ge=1, le=100_000, description="Rows per purge transaction.")
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None

    @property
    def resolved_database_url(self) -> str:
        """Return the configured database URL, or the embedded SQLite default."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'edgeloop.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        """Return the content-addressed artifact store root."""
        return self.data_dir / "artifacts"

    @property
    def keys_dir(self) -> Path:
        """Return the directory holding private keys (0700)."""
        return self.data_dir / "keys"

    @property
    def base_url(self) -> str:
        """Return the externally reachable base URL of this API."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

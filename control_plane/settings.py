"""Control-plane settings, read from EDGELOOP_* environment variables (never at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    audit_checkpoint_file: Path | None = Field(default=None, description=(
        "Append-only JSON-lines copy of every checkpoint (default: audit-checkpoints.jsonl in data_dir); keep it"
        " (or the sink's copy) off the database host: `edgeloop audit verify --against FILE` checks against it."))
    audit_checkpoint_sink_url: str | None = Field(default=None, description="POST each checkpoint line here too.")
    audit_checkpoint_sink_token: str | None = Field(default=None, description="Bearer token for the sink URL.")
    audit_checkpoint_sink_command: str | None = Field(default=None, description=(
        "Run this command (no shell; {seq} is replaced) with each checkpoint line on stdin, e.g."
        " `aws --endpoint-url https://s3.example s3 cp - s3://audit/edgeloop/{seq}.json`."))
    signing_key_path: Path | None = None
    key_encryption_key: SecretStr | None = Field(default=None, description=(
        "Base64 of 32 random bytes. Set: signing keys live in the database, private halves AES-GCM encrypted"
        " under it, shared by every replica (docs/security.md#signing-keys). Unset: key files in data_dir."))

    mqtt_url: str | None = Field(default=None, description="mqtt://host:port; no bridge when unset.")
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_public_url: str | None = Field(default=None, description="Broker URL given to devices (default mqtt_url).")
    mqtt_username: str | None = Field(default=None, description="The control plane's own broker user.")
    mqtt_password: str | None = Field(default=None, description="Its password (also hashed into the password file).")
    mqtt_ca_file: Path | None = Field(default=None, description="CA bundle for mqtts:// (system CAs when unset).")
    mqtt_client_cert: Path | None = Field(default=None, description="Client certificate for mqtts:// (optional).")
    mqtt_client_key: Path | None = Field(default=None, description="Its private key.")
    mqtt_auth_dir: Path | None = Field(default=None, description=(
        "Write the broker's password file and ACL here (from the device table) whenever credentials change."))
    mqtt_broker_pid_file: Path | None = Field(default=None, description="SIGHUP this broker after rewriting them.")
    manifest_ttl_seconds: int = Field(default=86_400, gt=0, description="Signed manifests expire after this.")
    fleet_step_seconds: float = Field(default=1.0, gt=0, description="How often rollouts are advanced.")
    experiment_evaluate_seconds: float = Field(default=30.0, gt=0, description=(
        "How often running A/B tests are evaluated (a winner at the horizon becomes a promotion proposal)."))
    eval_run_budget_seconds: float = Field(default=600.0, gt=0, description=(
        "An eval run is scored inside its request; one that takes longer is stopped (413) and stores nothing."))
    protected_device_labels: dict[str, str] = Field(default_factory=lambda: {"env": "production"}, description=(
        "A device carrying all these labels is protected: deployments to it need the version the protected alias"
        " names, or an approver; moving a device in or out of the set needs an approver. {} disables it."))
    protected_device_groups: list[str] = Field(default_factory=list, description="Groups protected likewise.")
    protected_alias: str = Field(default="production", description="The alias that pins protected devices' version.")
    fleet_telemetry_window_seconds: float = Field(default=60.0, ge=1, le=3600, description=(
        "Telemetry window length the manifests ask devices for (shadow gates count these windows)."))
    fleet_self_test_rows: int = Field(default=8, ge=1, le=256)
    fleet_self_test_max_latency_ms: float = Field(default=250.0, gt=0)
    chroma_url: str | None = None
    prompts_dir: str | None = Field(default=None, description=(
        "The agents' prompt files synced into the registry on start (default: prompts/ beside the data dir, if it"
        " exists; an empty value turns syncing off)."))
    retention_telemetry_days: float = Field(default=30.0, ge=0, description=(
        "Telemetry windows and labels older than this are purged (0: keep forever). Must exceed the ingest's"
        " max window age, so duplicate detection still sees the first copy."))
    retention_quarantine_days: float = Field(default=14.0, ge=0, description="Quarantined messages (0: keep).")
    retention_device_events_days: float = Field(default=90.0, ge=0, description="Device status/presence (0: keep).")
    retention_interval_seconds: float = Field(default=3600.0, gt=0, description="How often the purge runs.")
    retention_batch_size: int = Field(default=5000, ge=1, le=100_000, description="Rows per purge transaction.")
    ui_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86_400,
                                    description="Web UI sessions expire after this (the token may outlive it).")
    approval_poll_seconds: float = Field(default=0.05, gt=0, description="How often an idle executor looks for "
                                         "approved proposals (approvals on the same replica wake it at once).")
    approval_lease_seconds: float = Field(default=30.0, gt=0, description=(
        "An executing proposal whose claim is older than this (its worker died) is claimed again."))
    approval_max_attempts: int = Field(default=3, ge=1, le=100, description="Claims before a proposal fails.")
    approval_expiry_seconds: float = Field(default=5.0, gt=0, description="How often pending proposals expire.")
    approval_execution_hold_seconds: float = Field(default=0.0, ge=0, description=(
        "Crash tests only: hold the execution transaction open this long before its commit."))
    training_worker: bool = Field(default=True, description=(
        "Run approved retraining requests as training jobs in this process (off: only `edgeloop train` runs them)."))
    training_poll_seconds: float = Field(default=2.0, gt=0, description="How often an idle training worker looks.")
    training_lease_seconds: float = Field(default=900.0, gt=0, description=(
        "A running training job whose claim is older than this (its worker died) is claimed again."))
    training_max_attempts: int = Field(default=3, ge=1, le=100, description="Claims before a training job fails.")
    training_win_margin: float = Field(default=0.01, ge=0, le=1, description=(
        "A challenger is proposed for a canary only when its int8 accuracy on the recent labelled rows beats the"
        " champion's by at least this much (and it loses no more than this on the reference test split)."))
    training_min_samples: int = Field(default=20, ge=2, le=1_000_000, description=(
        "Labelled rows from the cohort's window needed before a job trains a challenger at all."))
    events_poll_seconds: float = Field(default=0.02, gt=0, description=(
        "Event stream wake-up: a file-backed SQLite database's files are checked every quarter of this "
        "(an os.stat); the audit head is read every 50x this as the safety net (PostgreSQL: LISTEN/NOTIFY, same "
        "safety net; in-memory SQLite: the head every interval)."))
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, description="Per delivery attempt.")
    webhook_max_attempts: int = Field(default=8, ge=1, le=50, description="Attempts before an event is dead.")
    webhook_backoff_seconds: float = Field(default=1.0, gt=0, description="First retry delay; doubles per attempt.")
    webhook_backoff_max_seconds: float = Field(default=300.0, gt=0, description="Retry delay cap.")
    webhook_concurrency: int = Field(default=4, ge=1, le=100, description="Deliveries in flight per subscription.")
    webhook_poll_seconds: float = Field(default=0.5, gt=0, description="How often webhooks look for due work.")
    log_format: Literal["text", "json"] = Field(default="text", description=(
        "`edgeloop serve` log lines: text, or one JSON object per line with the request id (docs/observability.md)."))
    access_log: bool = Field(default=True, description="Log one line per request (route template, status, time).")
    metrics_token: SecretStr | None = Field(default=None, min_length=16, description=(
        "A scrape-only bearer token for GET /metrics (16+ characters); any token with the read scope works too."))
    metrics_cache_seconds: float = Field(default=10.0, ge=0, description=(
        "How long /metrics reuses its database counts (per process), so N scrapers cost one read."))
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    assistant_checkpoint_url: str | None = Field(default=None, description=(
        "Chat threads' LangGraph checkpointer: sqlite:///file or postgresql://...; default: the PostgreSQL database, "
        "else assistant/checkpoints.db under data_dir."))
    assistant_api_url: str | None = Field(default=None, description=(
        "Where the assistant calls this control plane with the asking user's token (default http://127.0.0.1:port)."))
    assistant_max_tool_calls: int = Field(default=8, ge=1, le=50, description="Tool calls per chat turn.")

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

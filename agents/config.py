"""Agent settings (EDGELOOP_*), read when the worker starts, never at import."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    """Where the control plane and the LLM are, and where graph checkpoints live."""

    model_config = SettingsConfigDict(env_prefix="EDGELOOP_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    agents_api_url: str = "http://127.0.0.1:8000"
    agents_token: SecretStr | None = Field(default=None, description="An agent-role token; nothing else is used.")
    agents_checkpoint_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://...; default <data_dir>/agents/checkpoints.db")
    agents_lookback_hours: float = Field(default=6.0, gt=0, le=24 * 30)
    agents_verify_windows: int = Field(default=3, ge=1, le=1000)
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None

    def checkpoint_url(self) -> str:
        """Return the checkpointer URL, defaulting to SQLite under the data dir."""
        return self.agents_checkpoint_url or f"sqlite:///{self.data_dir / 'agents' / 'checkpoints.db'}"

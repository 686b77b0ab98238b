"""Start the worker: standalone (`edgeloop agents run`) or in-process next to the server (`serve --with-agents`)."""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from typing import Any

import httpx

from agents.checkpoint import open_checkpointer
from agents.config import AgentSettings
from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.worker import AgentWorker, Cursor

log = logging.getLogger(__name__)


def make_llm(settings: AgentSettings) -> LlmClient | None:
    """Return the LLM client when EDGELOOP_LLM_BASE_URL and _MODEL are set, else None (templates only)."""
    if not settings.llm_base_url or not settings.llm_model:
        return None
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LlmClient(settings.llm_base_url, settings.llm_model, key)


def run_worker(settings: AgentSettings, token: str, stop: threading.Event, **options: Any) -> None:
    """Run the worker until ``stop`` is set (the token is used as a header only, never logged)."""
    with ExitStack() as stack:
        client = stack.enter_context(ControlPlaneClient(settings.agents_api_url, token))
        whoami = client.read_json("/whoami")
        if whoami.get("role") != "agent":
            raise SystemExit("the agents need an agent-role token (EDGELOOP_AGENTS_TOKEN)")
        checkpointer = stack.enter_context(open_checkpointer(settings.checkpoint_url()))
        worker = AgentWorker(client, checkpointer, make_llm(settings),
                             Cursor(settings.data_dir / "agents" / "cursor.json"),
                             lookback_hours=settings.agents_lookback_hours,
                             verify_windows=settings.agents_verify_windows, **options)
        log.info("agents: following %s/api/v1/events (llm: %s)", settings.agents_api_url,
                 settings.llm_model or "none, templated explanations")
        worker.run(stop)


def wait_until_up(url: str, stop: threading.Event, timeout_seconds: float = 60.0) -> bool:
    """Wait for the control plane's health endpoint (in-process start races the server)."""
    waited = 0.0
    while waited < timeout_seconds and not stop.is_set():
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.5)
        waited += 0.5
    return False

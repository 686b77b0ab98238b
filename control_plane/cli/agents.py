"""`edgeloop agents run`: the triage / RCA / remediation worker, following the change stream."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from control_plane.cli.context import err_console

agents_app = typer.Typer(help="Agents: triage, root-cause analysis, remediation proposals.", no_args_is_help=True)


@agents_app.command("run")
def run(api_url: Annotated[str | None, typer.Option(help="Overrides EDGELOOP_AGENTS_API_URL.")] = None) -> None:
    """Follow GET /api/v1/events with an agent token (EDGELOOP_AGENTS_TOKEN) until interrupted."""
    from agents.config import AgentSettings
    from agents.runner import run_worker

    settings = AgentSettings()
    if api_url:
        settings.agents_api_url = api_url
    if settings.agents_token is None:
        err_console.print("[red]error[/]: set EDGELOOP_AGENTS_TOKEN to an agent-role token")
        raise typer.Exit(2)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_worker(settings, settings.agents_token.get_secret_value(), stop)
    except KeyboardInterrupt:
        stop.set()


class InProcessAgents:
    """The agents' worker thread next to the server; stop it before the server so no call is cut off."""

    def __init__(self, thread: threading.Thread, stop_event: threading.Event) -> None:
        self.thread, self.stop_event = thread, stop_event

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the worker to stop after its current event and wait for it."""
        self.stop_event.set()
        self.thread.join(timeout)


def start_in_process(settings: Any) -> InProcessAgents:
    """Mint an agent token in the database and run the worker in a daemon thread next to the server."""
    from agents.config import AgentSettings
    from agents.runner import run_worker, wait_until_up
    from control_plane.auth import service as auth_service
    from control_plane.auth.roles import Role
    from control_plane.auth.schemas import TokenCreate
    from control_plane.cli.context import db_session

    with db_session(settings) as session:
        _, token = auth_service.create_token(session=session, actor="system:serve",
                                             request=TokenCreate(name="in-process-agents", role=Role.AGENT))
    url = f"http://127.0.0.1:{settings.port}"
    agent_settings = AgentSettings(data_dir=settings.data_dir, agents_api_url=url)
    stop = threading.Event()

    def _run() -> None:
        if wait_until_up(url, stop):
            run_worker(agent_settings, token, stop)

    thread = threading.Thread(target=_run, name="edgeloop-agents", daemon=True)
    thread.start()
    return InProcessAgents(thread, stop)

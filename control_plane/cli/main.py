"""`edgeloop`: serve the control plane, run the demo, administer the registry and audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.bootstrap import prepare
from control_plane.cli.admin import audit_app, db_app, token_app
from control_plane.cli.agents import agents_app, start_in_process
from control_plane.cli.chat import chat
from control_plane.cli.context import load_settings
from control_plane.cli.errors import DEBUG_KEY, LOG_FILE_KEY, OneLineErrors
from control_plane.cli.evals import eval_app
from control_plane.cli.fleet import fleet_app
from control_plane.cli.keys import keys_app
from control_plane.cli.prompts import prompt_app
from control_plane.cli.registry import registry_app
from control_plane.cli.train import train
from control_plane.logs import configure_cli_logging
from control_plane.preflight import run_preflight
from control_plane.settings import Settings

app = typer.Typer(help="Edgeloop: LLMOps and edge-aware control plane.", no_args_is_help=True, cls=OneLineErrors)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(registry_app, name="registry")
app.add_typer(fleet_app, name="fleet")
app.add_typer(prompt_app, name="prompt")
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")
app.add_typer(agents_app, name="agents")
app.command("chat")(chat)
app.command("train")(train)


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", envvar="EDGELOOP_DEBUG",
                                        help="Show tracebacks and third-party log output.")] = False,
) -> None:
    """Edgeloop: LLMOps and edge-aware control plane."""
    ctx.meta[DEBUG_KEY] = debug
    use_log_file(ctx, load_settings())


def use_log_file(ctx: typer.Context, settings: Settings) -> None:
    """Log everything to ``<data_dir>/edgeloop.log`` (when writable), only Edgeloop's own warnings to the console."""
    log_file = settings.data_dir / "edgeloop.log" if settings.data_dir.is_dir() else None
    ctx.meta[LOG_FILE_KEY] = configure_cli_logging(log_file, debug=bool(ctx.meta.get(DEBUG_KEY)))


def run_server(settings: Settings) -> None:
    """Run uvicorn with one app built from ``settings``."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from control_plane.main import create_app
    from control_plane.observability.log_format import use_server_log_format

    use_server_log_format(settings.log_format)  # request ids on every record; JSON lines when log_format=json
    # JSON: uvicorn's records go through the root handlers above instead of its own text handlers.
    log_config = {"version": 1, "disable_existing_loggers": False} if settings.log_format == "json" else LOGGING_CONFIG
    served = create_app(settings)
    start_runbook_ingest(served)
    uvicorn.run(served, host=settings.host, port=settings.port, log_level="info", access_log=False,
                log_config=log_config)


def start_runbook_ingest(served: Any) -> None:
    """Ingest the runbooks and docs for the assistant in the background as the server starts (idempotent)."""
    import threading

    from control_plane.assistant.service import Runbooks

    runbooks = Runbooks(served.state.settings.data_dir)
    served.state.assistant_runbooks = runbooks
    threading.Thread(target=runbooks.warm, name="rag-ingest", daemon=True).start()


# Options that mirror a setting default to None ("unset"), so the precedence is always
# command-line option > EDGELOOP_* environment / .env > default.
HostOption = Annotated[str | None, typer.Option(help="Overrides EDGELOOP_HOST.")]
PortOption = Annotated[int | None, typer.Option(help="Overrides EDGELOOP_PORT.")]
DataDirOption = Annotated[Path | None, typer.Option(help="Overrides EDGELOOP_DATA_DIR.")]


@app.command()
def serve(ctx: typer.Context, host: HostOption = None, port: PortOption = None,
          data_dir: DataDirOption = None,
          with_agents: Annotated[bool, typer.Option("--with-agents", help="Run the agents' worker in-process.")]
          = False) -> None:
    """Apply migrations and serve the API."""
    settings = load_settings(host=host, port=port, data_dir=data_dir)
    use_log_file(ctx, settings)
    run_preflight(settings)
    prepare(settings)
    stop_agents = start_in_process(settings) if with_agents else None
    try:
        run_server(settings)
    finally:
        if stop_agents is not None:
            stop_agents.stop_event.set()  # the server has already stopped: nothing left to finish


@app.command()
def demo(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    host: HostOption = None,
    port: PortOption = None,
    devices: Annotated[int, typer.Option(min=2, max=2000, help="Simulated edge agents (two groups).")] = 50,
    once: Annotated[bool, typer.Option(help="Exit after the first rollout (no faults, no agents).")] = False,
    auto_approve: Annotated[bool, typer.Option(
        "--auto-approve", help="Approve the rollback, then the retraining and its canary, as a separate "
        "approver; exit 0 after a verified recovery and a retraining that ended in a canary or a recorded no-win.")]
    = False,
) -> None:
    """Run the loop on embedded defaults: SQLite, a private broker, a simulated fleet and a waved rollout."""
    settings = load_settings(host=host, port=port, data_dir=data_dir)
    run_preflight(settings, private_broker=True)  # before any slow work: model training, broker, fleet
    use_log_file(ctx, settings)

    from control_plane.demo import run_demo, stop_on_sigterm

    stop_on_sigterm()
    result = run_demo(settings, devices=devices, once=once, auto_approve=auto_approve)
    # --auto-approve: the rollback recovered AND retraining ended honestly (canary succeeded, or no win recorded).
    ok = (result.recovered and result.retraining is not None and result.retraining.honest if auto_approve
          else result.rollout_state == "succeeded")
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()

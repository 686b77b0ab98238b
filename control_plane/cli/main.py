"""`edgeloop`: serve the control plane, run the demo, administer the registry and audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from control_plane.bootstrap import prepare
from control_plane.cli.admin import audit_app, db_app, token_app
from control_plane.cli.context import load_settings
from control_plane.cli.evals import eval_app
from control_plane.cli.fleet import fleet_app
from control_plane.cli.keys import keys_app
from control_plane.cli.prompts import prompt_app
from control_plane.cli.registry import registry_app
from control_plane.settings import Settings

app = typer.Typer(help="Edgeloop: LLMOps and edge-aware control plane.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(registry_app, name="registry")
app.add_typer(fleet_app, name="fleet")
app.add_typer(prompt_app, name="prompt")
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")


def run_server(settings: Settings) -> None:
    """Run uvicorn with one app built from ``settings``."""
    import uvicorn

    from control_plane.main import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                access_log=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides EDGELOOP_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides EDGELOOP_PORT.")] = None,
) -> None:
    """Apply migrations and serve the API."""
    settings = load_settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    prepare(settings)
    run_server(settings)


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its database and artifacts.")] = Path(
        ".edgeloop"),
    port: int = 8000,
    devices: Annotated[int, typer.Option(min=1, max=2000, help="Simulated edge agents.")] = 8,
    once: Annotated[bool, typer.Option(help="Exit after the rollout instead of serving.")] = False,
) -> None:
    """Run the loop on embedded defaults: SQLite, a private broker, a simulated fleet and a waved rollout."""
    from control_plane.demo import run_demo

    result = run_demo(Settings(data_dir=data_dir, port=port), devices=devices, once=once)
    raise typer.Exit(0 if result.rollout_state == "succeeded" else 1)


if __name__ == "__main__":
    app()

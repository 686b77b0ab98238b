"""`edgeloop prompt` commands: list, show, diff, label, render, sync (local, against the database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal
from control_plane.cli.context import console, db_session, err_console, load_settings
from control_plane.errors import Conflict, EdgeloopError
from control_plane.prompts import labels, service, sync
from control_plane.prompts.schemas import LabelSet

prompt_app = typer.Typer(help="Prompt registry: versions, labels and the eval gate.", no_args_is_help=True)
# The CLI runs with database access, i.e. as an administrator; it still has to pass the eval gate.
CLI_PRINCIPAL = Principal(token_id="cli", name="cli", role=Role.ADMIN, scopes=ROLE_SCOPES[Role.ADMIN])


def _fail(exc: EdgeloopError, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error[/]: {exc.message}")
    return typer.Exit(code)


@prompt_app.command("list")
def prompt_list() -> None:
    """List prompts with their latest version and labels."""
    table = Table("prompt", "kind", "latest", "labels", "description")
    with db_session(write=False) as session:
        for prompt in service.list_prompts(session=session, limit=1000):
            latest = service.latest_version_number(session=session, prompt_id=prompt.id)
            tags = ", ".join(f"{p.label}→{p.version.version}{' (protected)' if p.protected else ''}"
                             for p in prompt.labels)
            table.add_row(prompt.name, prompt.kind, str(latest or "-"), tags, prompt.description)
    console.print(table)


@prompt_app.command("show")
def prompt_show(ref: Annotated[str, typer.Argument(help="NAME, NAME@N or NAME@label")]) -> None:
    """Show one version: template or messages, variables, model parameters."""
    try:
        with db_session(write=False) as session:
            version = service.resolve_ref(session=session, ref=ref)
            name = version.prompt.name
            tags = [p.label for p in version.prompt.labels if p.version_id == version.id]
            console.print(f"[bold]{name}@{version.version}[/] {version.id}  labels: {', '.join(tags) or '-'}")
            console.print(f"commit: {version.commit_message or '-'}  source: {version.source}  "
                          f"hash: {version.content_hash[:12]}")
            console.print(f"variables: {', '.join(version.variables) or '-'}")
            console.print(f"model_params: {json.dumps(version.model_params, sort_keys=True)}")
            body = version.template or "".join(f"=== {m['role']} ===\n{m['content']}" for m in version.messages)
            console.print(body, markup=False, highlight=False)
    except EdgeloopError as exc:
        raise _fail(exc) from exc


@prompt_app.command("diff")
def prompt_diff(name: str, from_ref: str, to_ref: str) -> None:
    """Print the unified diff between two versions (numbers or labels)."""
    try:
        with db_session(write=False) as session:
            _, _, text = service.diff(session=session, name=name, from_ref=from_ref, to_ref=to_ref)
    except EdgeloopError as exc:
        raise _fail(exc) from exc
    console.print(text or "(no differences)", markup=False, highlight=False)


@prompt_app.command("label")
def prompt_label(
    name: str, label: str, version: int,
    override_reason: Annotated[str | None, typer.Option(help="Move a protected label past a failing gate.")] = None,
    protected: Annotated[bool | None, typer.Option("--protected/--unprotected")] = None,
) -> None:
    """Point a label at a version; protected labels must pass the eval gate (exit 1 when it fails)."""
    request = LabelSet(version=version, protected=protected, override_reason=override_reason)
    try:
        with db_session() as session:
            pointer, decision, overridden = labels.set_label(session=session, name=name, label=label,
                                                             request=request, principal=CLI_PRINCIPAL)
            moved = f"{name}: {label} → {pointer.version.version}"
    except Conflict as exc:
        raise _fail(exc, 1) from exc
    except EdgeloopError as exc:
        raise _fail(exc) from exc
    gate = f"  gate: {decision.reason}" if decision else ""
    console.print(f"{moved}{' (OVERRIDDEN)' if overridden else ''}{gate}")


@prompt_app.command("render")
def prompt_render(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@N or NAME@label")],
    var: Annotated[list[str] | None, typer.Option("--var", help="name=value, repeatable")] = None,
) -> None:
    """Render a version with variables (strict: a missing variable is an error)."""
    variables = dict(item.split("=", 1) for item in var or [] if "=" in item)
    try:
        with db_session(write=False) as session:
            text, messages = service.render_version(service.resolve_ref(session=session, ref=ref), variables)
    except EdgeloopError as exc:
        raise _fail(exc) from exc
    console.print(text or "".join(f"=== {m['role']} ===\n{m['content']}" for m in messages),
                  markup=False, highlight=False)


@prompt_app.command("sync")
def prompt_sync(directory: Annotated[Path | None, typer.Option("--dir", help="Defaults to the server's.")] = None,
                ) -> None:
    """Sync prompt files into the registry (new content → new version; exit 1 if a file was skipped)."""
    folder = directory or sync.prompts_dir(load_settings()) or Path("prompts")
    if not folder.is_dir():
        err_console.print(f"[red]error[/]: no prompts directory at {folder}")
        raise typer.Exit(2)
    with db_session() as session:
        report = sync.sync_directory(session=session, directory=folder)
    console.print(f"created: {', '.join(report.created) or '-'}\nnew versions: {', '.join(report.new_versions) or '-'}"
                  f"\nunchanged: {', '.join(report.unchanged) or '-'}")
    for source, error in report.errors.items():
        err_console.print(f"[red]skipped[/] {source}: {error}")
    if report.errors:
        raise typer.Exit(1)

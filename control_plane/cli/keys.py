"""`edgeloop keys`: list the shared signing keys, rotate the manifest key in band, import a key file."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from control_plane.cli.context import CLI_ACTOR, console, db_session, err_console, load_settings
from control_plane.errors import EdgeloopError
from control_plane.keys import service as keys
from control_plane.keys.models import SigningKey

keys_app = typer.Typer(help="Signing keys shared by every replica (docs/security.md#signing-keys).",
                       no_args_is_help=True)
WEEK_S = 7 * 86_400


@keys_app.command("list")
def keys_list() -> None:
    """Show every key generation, where its private half lives and when it retires."""
    table = Table("purpose", "gen", "key_id", "private key", "retire_at")
    with db_session(write=False) as session:
        for row in session.scalars(select(SigningKey).order_by(SigningKey.purpose, SigningKey.generation)):
            table.add_row(row.purpose, str(row.generation), row.key_id,
                          "database (encrypted)" if row.private_key_encrypted else "key file",
                          row.retire_at.isoformat() if row.retire_at else "-")
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(
    grace_seconds: Annotated[float, typer.Option(help="How long devices still accept the current key.")] = WEEK_S,
) -> None:
    """Add the next manifest key, signed in by the current one; devices learn it with their next manifest."""
    settings = load_settings()
    try:
        with db_session(settings) as session:
            row = keys.rotate(session, settings, grace_seconds=grace_seconds, actor=CLI_ACTOR)
            key_id, generation = row.key_id, row.generation
    except (EdgeloopError, keys.KeyStoreError) as exc:
        err_console.print(f"[red]cannot rotate[/]: {exc}")
        raise typer.Exit(1) from exc
    console.print(f"manifest key generation {generation} is {key_id}; the previous key retires in "
                  f"{grace_seconds:.0f}s. Replicas sign with the new key from their next rollout wave.")


@keys_app.command("import")
def keys_import(purpose: Annotated[str, typer.Option(help="manifest or audit")] = "manifest") -> None:
    """Move this replica's key file into the encrypted key store (the database had only its public half)."""
    settings = load_settings()
    try:
        with db_session(settings) as session:
            row = keys.import_file_key(session, settings, purpose)
            key_id = row.key_id
    except (EdgeloopError, keys.KeyStoreError) as exc:
        err_console.print(f"[red]cannot import[/]: {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{purpose} key {key_id} is now stored encrypted in the database")

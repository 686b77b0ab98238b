"""`edgeloop db`, `edgeloop token` and `edgeloop audit` commands (local, against the database)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from control_plane.audit import service as audit
from control_plane.audit.checkpoints import AuditChainBroken, CheckpointSink, checkpoint_once, load_checkpoint_file
from control_plane.auth import service as auth
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.cli.context import CLI_ACTOR, console, db_session, err_console, load_settings
from control_plane.db import migrate
from control_plane.db.session import Database
from control_plane.errors import Invalid
from control_plane.keys.service import KeyStore
from control_plane.private_files import ensure_private_dir
from control_plane.signing import Signer

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "heads") -> None:
    """Apply migrations."""
    settings = load_settings()
    ensure_private_dir(settings.data_dir)
    migrate.upgrade(settings.resolved_database_url, revision)
    console.print(f"database at {', '.join(migrate.current(settings.resolved_database_url))}")


@db_app.command("current")
def db_current() -> None:
    """Show the applied revision(s)."""
    console.print(", ".join(migrate.current(load_settings().resolved_database_url)) or "(empty)")


@db_app.command("purge")
def db_purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what is due; delete nothing.")] = False,
) -> None:
    """Purge telemetry, quarantine and device events older than the retention settings (audited)."""
    from control_plane.retention import RetentionPolicy, purge

    settings = load_settings()
    database = Database(settings.resolved_database_url)
    try:
        report = purge(database, RetentionPolicy.from_settings(settings), dry_run=dry_run)
    finally:
        database.dispose()
    table = Table("table", "older than (UTC)", "due" if dry_run else "purged")
    for name, cutoff in report.cutoffs.items():
        table.add_row(name, f"{datetime.fromtimestamp(cutoff, UTC):%Y-%m-%d %H:%M}", f"{report.deleted[name]:,}")
    console.print(table)


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="viewer, operator, approver, admin, agent or device")],
    name: Annotated[str, typer.Option(help="Who or what holds the token.")],
    device_id: Annotated[str | None, typer.Option(help="Required for the device role.")] = None,
    expires_in_days: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Create a token and print it once."""
    request = TokenCreate(name=name, role=role, device_id=device_id, expires_in_days=expires_in_days)
    with db_session() as session:
        token, plaintext = auth.create_token(session=session, request=request, actor=CLI_ACTOR)
        console.print(f"[bold]{token.id}[/] role={token.role} (shown once):", highlight=False)
    print(plaintext)


@token_app.command("list")
def token_list() -> None:
    """List tokens."""
    table = Table("id", "name", "role", "device", "created", "revoked")
    with db_session(write=False) as session:
        for t in auth.list_tokens(session=session):
            table.add_row(t.id, t.name, t.role, t.device_id or "", f"{t.created_at:%Y-%m-%d %H:%M}",
                          f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "")
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token."""
    with db_session() as session:
        auth.revoke_token(session=session, token_id=token_id, actor=CLI_ACTOR)
    console.print(f"revoked {token_id}")


def _audit_signer() -> Signer:
    # The shared key from the database key store (or the checked key file); call it before opening a session.
    settings = load_settings()
    database = Database(settings.resolved_database_url)
    try:
        return KeyStore(settings, database).load("audit")
    finally:
        database.dispose()


@audit_app.command("verify")
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    against: Annotated[list[Path] | None, typer.Option(
        "--against", help="Checkpoint JSON-lines file(s) kept outside the database (repeatable): catches deleted "
                          "rows and checkpoints, truncation and rewrites the database alone cannot show.")] = None,
) -> None:
    """Recompute the chain; exit 1 and name the first broken entry if it was tampered with."""
    public_key = _audit_signer().public_raw  # before any session: it may open its own
    try:
        external = [record for path in against or [] for record in load_checkpoint_file(path)]
    except Invalid as exc:
        err_console.print(f"[red]cannot use --against[/]: {exc.message}")
        raise typer.Exit(2) from exc
    with db_session(write=False) as session:
        report = audit.verify(session=session, public_key=public_key, external=external)
    if as_json:
        print(report.model_dump_json())
    elif report.ok:
        console.print(f"[green]ok[/]: {report.entries} entries, {report.checkpoints_verified} signed checkpoints "
                      f"verified, {report.external_checkpoints_verified} from --against, "
                      f"head {report.head_hash[:16]}… ({report.elapsed_ms:.0f} ms)")
    else:
        where = (f"entry {report.first_broken_seq}" if report.first_broken_seq is not None
                 else f"checkpoint {report.broken_checkpoint_seq}")
        err_console.print(f"[red]BROKEN[/] at {where}: {report.reason}")
        for problem in report.problems[1:]:
            err_console.print(f"  also: {problem}")
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Verify the entries since the last trusted checkpoint, then sign the current head and publish it."""
    settings = load_settings()
    database = Database(settings.resolved_database_url)
    try:
        checkpoint = checkpoint_once(database, _audit_signer(), CheckpointSink.from_settings(settings))
    except AuditChainBroken as exc:
        err_console.print(f"[red]not signed[/]: {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    console.print(f"checkpoint at {checkpoint.seq}" if checkpoint else "head already checkpointed")


@audit_app.command("export")
def audit_export(output: Annotated[Path | None, typer.Option("--output", "-o")] = None) -> None:
    """Write the log as JSON Lines (stdout by default)."""
    with db_session(write=False) as session:
        stream = output.open("w") if output else sys.stdout
        try:
            for line in audit.export_lines(session=session):
                stream.write(line)
        finally:
            if output:
                stream.close()


@audit_app.command("tail")
def audit_tail(limit: int = 20) -> None:
    """Show the newest entries."""
    with db_session(write=False) as session:
        for entry in audit.latest_entries(session=session, limit=limit):
            read = audit.to_read(entry)
            console.print(f"{read.seq:>7} {read.ts:%Y-%m-%d %H:%M:%S} {read.actor:<24} {read.action:<24} "
                          f"{read.resource_type}:{read.resource_id} {json.dumps(read.data)[:80]}", highlight=False)

"""First-start preparation shared by `serve` and `demo`: data dir, migrations, first admin token."""

from __future__ import annotations

import os

from control_plane.auth import service as auth
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.cli.context import CLI_ACTOR, console, db_session
from control_plane.db import migrate
from control_plane.private_files import ensure_private_dir
from control_plane.settings import Settings


def bootstrap_admin(settings: Settings) -> str | None:
    """Create the first admin token on a fresh install and store it 0600; return it if created."""
    with db_session(settings) as session:
        if auth.has_admin(session=session):
            return None
        _, plaintext = auth.create_token(session=session, actor=CLI_ACTOR,
                                         request=TokenCreate(name="bootstrap-admin", role=Role.ADMIN))
    path = settings.data_dir / "admin.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(plaintext + "\n")
    return plaintext


def prepare(settings: Settings) -> None:
    """Create the data dir, apply migrations and bootstrap the first admin token."""
    ensure_private_dir(settings.data_dir)
    migrate.upgrade(settings.resolved_database_url)
    if bootstrap_admin(settings):
        console.print(f"[bold yellow]first start[/]: admin token written to {settings.data_dir / 'admin.token'}")

"""Shared CLI plumbing: settings, database, console."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from sqlalchemy.orm import Session

from control_plane.db.session import Database
from control_plane.settings import Settings

console = Console()
err_console = Console(stderr=True)

CLI_ACTOR = "admin:cli"


def load_settings(**options: Any) -> Settings:
    """Read settings from the environment (EDGELOOP_*, .env); command-line options that were given win."""
    given = {name: value for name, value in options.items() if value is not None}
    return Settings(**given)


@contextmanager
def db_session(settings: Settings | None = None, *, write: bool = True) -> Iterator[Session]:
    """Yield a committed-on-success session against the configured database."""
    database = Database((settings or load_settings()).resolved_database_url)
    try:
        with database.transaction(write=write) as session:
            yield session
    finally:
        database.dispose()

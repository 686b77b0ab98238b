"""Run Alembic migrations programmatically (used by the CLI, `serve` and the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# LangGraph's PostgreSQL checkpointer (agents and the assistant) keeps its own tables in the same database and
# creates them itself: they are not ours to migrate, and autogenerate must neither drop nor report them.
CHECKPOINTER_TABLES = frozenset({"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"})


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave the checkpointer's tables (and their indexes) out of autogenerate comparisons."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table not in CHECKPOINTER_TABLES


def alembic_config(url: str) -> Config:
    """Return an Alembic config pointing at this package's migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Apply every migration up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> list[str]:
    """Return the revisions the database is at."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()

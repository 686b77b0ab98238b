"""Alembic environment: online migrations only, serialised across replicas."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import JSON, text

from control_plane.db import all_models  # noqa: F401  (populates Base.metadata)
from control_plane.db.base import Base, UTCDateTime
from control_plane.db.migrate import include_object
from control_plane.db.session import create_db_engine

# Any constant works; it only has to be the same for every replica.
MIGRATION_LOCK_KEY = 7_341_990_021


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our column types with only the imports a migration file has (sa, postgresql)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, JSON):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def run_migrations_online() -> None:
    """Apply migrations, holding a PostgreSQL advisory lock so two replicas never race."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_db_engine(url)
    with engine.connect() as connection:
        is_postgres = connection.dialect.name == "postgresql"
        if is_postgres:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=Base.metadata,
                              render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                              render_item=render_item, include_object=include_object)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if is_postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
    engine.dispose()


run_migrations_online()

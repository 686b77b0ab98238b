"""The graphs' persistent checkpointer: SQLite by default, PostgreSQL when the URL says so."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver


@contextmanager
def open_checkpointer(url: str) -> Iterator[BaseCheckpointSaver[str]]:
    """Open (and set up) the checkpointer for ``url``: ``sqlite:///file`` or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from langgraph.checkpoint.postgres import PostgresSaver

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with PostgresSaver.from_conn_string(dsn) as saver:
            _setup_once(dsn, saver)
            yield saver
        return
    if not url.startswith("sqlite:///"):
        raise ValueError("checkpoint URL must be sqlite:///<file> or postgresql://...")
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        sqlite_saver = SqliteSaver(connection)
        sqlite_saver.setup()
        yield sqlite_saver
    finally:
        connection.close()


SETUP_LOCK_KEY = 0x4544474C4F4F5043  # "EDGLOOPC": one replica at a time creates the checkpointer's tables


def _setup_once(dsn: str, saver: Any) -> None:
    """Run the PostgreSQL checkpointer's setup under an advisory lock: replicas starting together would race.

    The lock is taken with short try-lock polls on its own autocommit connection: a session blocked in
    pg_advisory_lock sits in an open transaction, which the holder's CREATE INDEX CONCURRENTLY would wait for.
    """
    import time

    import psycopg

    with psycopg.connect(dsn, autocommit=True) as lock:
        while not lock.execute("SELECT pg_try_advisory_lock(%s)", (SETUP_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            time.sleep(0.1)
        try:
            saver.setup()
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))

"""Engine and session factories: SQLite in WAL mode by default, PostgreSQL in production."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from control_plane.private_files import prepare_sqlite_file

SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_SIZE, POOL_MAX_OVERFLOW = 10, 20
# Connections no request session may take: the event loop's own short checkouts (token checks in RequestGuard and
# for SQLite writes) and the background workers' threads. Requests wait for a slot asynchronously instead.
POOL_RESERVED = 6
SqliteBegin = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"]


def _configure_sqlite(engine: Engine, begin: SqliteBegin) -> None:
    """Enable WAL, foreign keys and explicit ``BEGIN <begin>`` transactions on every SQLite connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so the BEGIN below is the one that runs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a committed transaction survives an
        # application crash (the WAL is in the OS page cache); only a power loss or OS crash can undo the last ones.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    # Writers take the lock up front: a deferred transaction that reads and then writes can fail with SQLITE_BUSY
    # instead of waiting, and the audit chain must read its head under the lock. The BEGIN is the dialect's own
    # hook on this engine's private dialect, not a "begin" event listener: any connection-event listener makes
    # every statement of every transaction go through SQLAlchemy's event dispatch.
    statement = f"BEGIN {begin}"

    def _do_begin(dbapi_connection: Any) -> None:
        dbapi_connection.execute(statement)

    setattr(engine.dialect, "do_begin", _do_begin)  # noqa: B010 - an instance override, on purpose


def create_db_engine(url: str, *, sqlite_begin: SqliteBegin = "DEFERRED", **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings each backend needs (SQLite transactions use ``sqlite_begin``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode.
            prepare_sqlite_file(Path(parsed.database))
        if parsed.database and parsed.database != ":memory:":
            kwargs = {"pool_size": POOL_SIZE, "max_overflow": POOL_MAX_OVERFLOW, **kwargs}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _configure_sqlite(engine, sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_MAX_OVERFLOW, **kwargs)


class RequestSlots:
    """Admit at most ``limit`` request sessions at once, so checking out a pooled connection never waits.

    A request holds its connection from its token check (on the event loop) until its session is finished (on the
    loop too). Were the pool empty, the next checkout would block the loop, and with it every release the pool is
    waiting for, until the pool timeout: a stall any reader could cause with a few dozen parallel requests. Waiting
    here is asynchronous. One semaphore per event loop: an asyncio semaphore belongs to the loop it first ran on.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = self._by_loop[loop] = asyncio.Semaphore(self.limit)
        async with semaphore:
            yield


class Database:
    """Owns the engines and hands out read and write sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # SQLite writers get their own engine (and pool), whose transactions begin IMMEDIATE.
        self._write_engine = create_db_engine(url, sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        self.request_slots = RequestSlots(POOL_SIZE + POOL_MAX_OVERFLOW - POOL_RESERVED)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)

    def session(self, *, write: bool = True) -> Session:
        """Return a new session; writers lock SQLite up front."""
        return (self._writer if write else self._reader)()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """Yield a session that commits on success and rolls back on error."""
        session = self.session(write=write)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._write_engine is not self.engine:
            self._write_engine.dispose()

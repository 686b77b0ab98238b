"""Write validated windows in one statement per batch, skipping (device_id, window_seq) pairs already stored.

The SQLAlchemy Core path (`insert().on_conflict_do_nothing().returning()` with many parameter sets) spent
more CPU than validating the windows: it processes every parameter of every row in Python and, on
PostgreSQL, psycopg re-parses the multi-row statement it expands to on every batch (too long for its
query cache). Here each engine gets one driver-level statement per batch:

* PostgreSQL: `INSERT ... SELECT * FROM unnest(<one array per column>) ON CONFLICT DO NOTHING RETURNING`.
  The SQL text never changes, so psycopg caches and prepares it; the 16 arrays are adapted in C.
* SQLite: a multi-row `INSERT ... VALUES (?, ...), ... ON CONFLICT DO NOTHING RETURNING` with flat
  positional parameters (sqlite3 binds them in C); SQLite allows 32,766 parameters per statement.

Any other dialect uses the portable Core statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from control_plane.telemetry.models import QuarantinedMessage, TelemetryWindowRow

WINDOWS: Table = TelemetryWindowRow.__table__  # type: ignore[assignment]
QUARANTINE: Table = QuarantinedMessage.__table__  # type: ignore[assignment]
# The database or the connection failed, not the rows: retrying row by row would quarantine good windows.
UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)

# Column order of the row tuples `insert_windows` takes (every column but the surrogate id).
COLUMNS = ("device_id", "window_seq", "model_name", "model_version", "baseline_id", "window_start", "window_end",
           "received_at", "device_group", "rollout_id", "deployment_id", "n", "calls", "errors", "dropped_windows",
           "sketch")
WindowValues = tuple[Any, ...]

_PG_TYPES = ("varchar", "int8", "varchar", "int4", "varchar", "float8", "float8", "float8", "varchar", "varchar",
             "varchar", "int8", "int8", "int8", "int8", "text")
_CONFLICT = "ON CONFLICT (device_id, window_seq) DO NOTHING RETURNING device_id, window_seq"
_PG_INSERT = (
    f"INSERT INTO {WINDOWS.name} ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%s::{kind}[]" for kind in _PG_TYPES) + f") {_CONFLICT}"
)
_SQLITE_ROW = "(" + ", ".join("?" * len(COLUMNS)) + ")"
_SQLITE_MAX_ROWS = 32_766 // len(COLUMNS)


def insert_windows(session: Session, rows: Sequence[WindowValues]) -> list[tuple[str, int]]:
    """Insert window rows (tuples in `COLUMNS` order) unless their key exists; return the keys inserted."""
    if not rows:
        return []
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        result = connection.exec_driver_sql(_PG_INSERT, tuple(columns))
        return [(str(r[0]), int(r[1])) for r in result]
    if dialect == "sqlite":
        inserted: list[tuple[str, int]] = []
        for start in range(0, len(rows), _SQLITE_MAX_ROWS):
            chunk = rows[start : start + _SQLITE_MAX_ROWS]
            params = tuple(chain.from_iterable(chunk))
            result = connection.exec_driver_sql(_sqlite_insert(len(chunk)), params)
            inserted += [(str(r[0]), int(r[1])) for r in result]
        return inserted
    return _insert_core(session, rows)


@lru_cache(maxsize=1024)
def _sqlite_insert(count: int) -> str:
    values = ", ".join([_SQLITE_ROW] * count)
    return f"INSERT INTO {WINDOWS.name} ({', '.join(COLUMNS)}) VALUES {values} {_CONFLICT}"


def _insert_core(session: Session, rows: Sequence[WindowValues]) -> list[tuple[str, int]]:
    """Portable path: one cached Core statement executed with many parameter sets."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        module.insert(WINDOWS).on_conflict_do_nothing(index_elements=["device_id", "window_seq"])
        .returning(WINDOWS.c.device_id, WINDOWS.c.window_seq)
    )
    params = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    return [(str(r[0]), int(r[1])) for r in session.execute(statement, params)]


def insert_windows_isolated(session: Session, rows: Sequence[WindowValues]
                            ) -> tuple[list[tuple[str, int]], list[tuple[int, str]]]:
    """Insert rows like `insert_windows`; when the batch fails, bisect it so only the rows that fail are left out.

    Each attempt runs in a savepoint, so a refused statement leaves the transaction usable. Returns the keys
    inserted and (index in `rows`, error) per row the database refused on its own. An error that says the
    database is unavailable propagates: the caller retries the batch later instead of blaming rows.
    """
    inserted: list[tuple[str, int]] = []
    failed: list[tuple[int, str]] = []
    pending = [(0, len(rows))]
    while pending:
        start, end = pending.pop()
        try:
            with session.begin_nested():
                inserted += insert_windows(session, rows[start:end])
        except UNAVAILABLE:
            raise
        except Exception as exc:  # DataError, IntegrityError, OverflowError, ...: something in these rows
            if end - start == 1:
                failed.append((start, f"{type(exc).__name__}: {_first_line(exc)}"))
            else:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]
    return inserted, failed


def insert_quarantine(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert quarantine rows, row by row if the batch fails; a row still refused is kept without its payload."""
    try:
        with session.begin_nested():
            session.execute(insert(QUARANTINE), list(rows))
        return
    except UNAVAILABLE:
        raise
    except Exception:
        pass
    for row in rows:
        try:
            with session.begin_nested():
                session.execute(insert(QUARANTINE), [row])
        except UNAVAILABLE:
            raise
        except Exception as exc:
            bare = {**row, "topic": None, "device_id": None, "payload": "", "window_seq": None,
                    "detail": f"unstorable quarantine row ({type(exc).__name__})"}
            with session.begin_nested():
                session.execute(insert(QUARANTINE), [bare])


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:300] if text else ""

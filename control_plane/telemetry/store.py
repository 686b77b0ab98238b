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

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from control_plane.telemetry.models import TelemetryWindowRow

WINDOWS: Table = TelemetryWindowRow.__table__  # type: ignore[assignment]

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

"""Append to, read, checkpoint and verify the audit chain."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, SessionTransaction

from control_plane.audit.chain import canonical_json, entry_hash
from control_plane.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEntry, AuditHead
from control_plane.audit.schemas import AuditEntryRead
from control_plane.audit.verify import verify
from control_plane.db.base import utcnow
from control_plane.signing import Signer

HEAD_ROW_ID = 1
_ENTRIES = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_ENTRY_COLUMNS = ("seq", "ts", "actor", "action", "resource_type", "resource_id", "body", "prev_hash", "hash")
# session.info key of (transaction, seq, hash): the head this transaction already holds locked.
_HEAD_CACHE = "edgeloop.audit.head"
__all__ = [
    "create_checkpoint",
    "export_lines",
    "latest_entries",
    "list_checkpoints",
    "list_entries",
    "lock_head",
    "record",
    "to_read",
    "verify",
]


@dataclass(frozen=True)
class _AppendSql:
    """The append's three statements in one driver's own SQL, and the bind conversion of ``ts``."""

    select_head: str
    insert_head: str
    insert_entry: str
    update_head: str
    bind_ts: Callable[[datetime], Any]


# Derived, immutable and keyed by driver, so sharing it between apps in one process is harmless.
_APPEND_SQL: dict[tuple[str, str, str], _AppendSql] = {}


def _append_sql(dialect: Dialect) -> _AppendSql:
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    if key not in _APPEND_SQL:
        _APPEND_SQL[key] = _build_append_sql(dialect)
    return _APPEND_SQL[key]


def _build_append_sql(dialect: Dialect) -> _AppendSql:
    # The driver's own cursor runs these: SQLAlchemy's execution pipeline (events, cache keys, result objects)
    # costs several times SQLite's own work for these one-row statements.
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        raise NotImplementedError(f"audit append: unsupported driver paramstyle {dialect.paramstyle!r}")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    lock = " FOR UPDATE" if dialect.name == "postgresql" else ""  # SQLite writers already hold the database lock
    bind_ts = _ENTRIES.c.ts.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    return _AppendSql(
        select_head=f"SELECT seq, hash FROM audit_head WHERE id = {HEAD_ROW_ID}{lock}",
        insert_head=f"INSERT INTO audit_head (id, seq, hash) VALUES ({HEAD_ROW_ID}, 0, '{GENESIS_HASH}')",
        insert_entry=f"INSERT INTO audit_entries ({', '.join(_ENTRY_COLUMNS)}) "
                     f"VALUES ({', '.join([mark] * len(_ENTRY_COLUMNS))})",
        update_head=f"UPDATE audit_head SET seq = {mark}, hash = {mark} WHERE id = {HEAD_ROW_ID}",
        bind_ts=bind_ts,
    )


def _driver_cursor(session: Session) -> tuple[Any, _AppendSql]:
    """Return a driver cursor in the session's transaction (begun, so locked on SQLite) and the append SQL."""
    connection = session.connection()
    sql = _append_sql(connection.dialect)
    raw = connection.connection.driver_connection
    assert raw is not None
    return raw.cursor(), sql


def _current_transaction(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


def _read_head(cursor: Any, sql: _AppendSql) -> tuple[int, str]:
    cursor.execute(sql.select_head)
    row = cursor.fetchone()
    if row is None:
        cursor.execute(sql.insert_head)
        return 0, GENESIS_HASH
    return int(row[0]), str(row[1])


def _lock_head(session: Session) -> tuple[int, str]:
    # FOR UPDATE serialises appenders on PostgreSQL; SQLite writers already hold the database lock.
    # Once locked, the head cannot move under this transaction, so later appends in the same (innermost)
    # transaction reuse it; a savepoint begun, released or rolled back changes the key and forces a re-read.
    cursor, sql = _driver_cursor(session)
    try:
        return _cached_head(session) or _read_head(cursor, sql)
    finally:
        cursor.close()


def _cached_head(session: Session) -> tuple[int, str] | None:
    transaction = _current_transaction(session)
    cached = session.info.get(_HEAD_CACHE)
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1], cached[2]
    return None


def record(
    session: Session, *, actor: str, action: str, resource: tuple[str, str], data: dict[str, Any]
) -> int:
    """Append one entry in the caller's transaction and return its sequence number."""
    cursor, sql = _driver_cursor(session)  # begins the transaction first, so the head is read under the lock
    try:
        seq, prev_hash = _cached_head(session) or _read_head(cursor, sql)
        seq += 1
        ts = utcnow()
        resource_type, resource_id = resource
        body = canonical_json(
            {"seq": seq, "ts": ts, "actor": actor, "action": action,
             "resource": {"type": resource_type, "id": resource_id}, "data": data}
        )
        digest = entry_hash(prev_hash, body)
        cursor.execute(sql.insert_entry, (seq, sql.bind_ts(ts), actor, action, resource_type, resource_id, body,
                                          prev_hash, digest))
        cursor.execute(sql.update_head, (seq, digest))
    finally:
        cursor.close()
    session.info[_HEAD_CACHE] = (_current_transaction(session), seq, digest)
    return seq


def to_read(entry: AuditEntry) -> AuditEntryRead:
    """Present an entry from its hashed body, not from the filter columns."""
    body = json.loads(entry.body)
    return AuditEntryRead(
        seq=entry.seq, ts=body["ts"], actor=body["actor"], action=body["action"],
        resource_type=body["resource"]["type"], resource_id=body["resource"]["id"], data=body["data"],
        prev_hash=entry.prev_hash, hash=entry.hash,
    )


def list_entries(
    *, session: Session, after_seq: int = 0, limit: int = 100, action: str | None = None,
    resource_type: str | None = None, resource_id: str | None = None, actor: str | None = None,
) -> list[AuditEntry]:
    """Return entries after ``after_seq`` in chain order, optionally filtered."""
    query = select(AuditEntry).where(AuditEntry.seq > after_seq)
    if action:
        query = query.where(AuditEntry.action == action)
    if resource_type:
        query = query.where(AuditEntry.resource_type == resource_type)
    if resource_id:
        query = query.where(AuditEntry.resource_id == resource_id)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    return list(session.scalars(query.order_by(AuditEntry.seq).limit(limit)))


def latest_entries(*, session: Session, limit: int = 20) -> list[AuditEntry]:
    """Return the newest ``limit`` entries, oldest of them first."""
    newest = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit))
    return list(reversed(list(newest)))


def export_lines(*, session: Session, batch: int = 5000) -> Iterator[str]:
    """Yield the whole log as JSON Lines, one entry per line, in chain order."""
    after = 0
    while True:
        entries = list_entries(session=session, after_seq=after, limit=batch)
        if not entries:
            return
        for entry in entries:
            yield to_read(entry).model_dump_json() + "\n"
        after = entries[-1].seq


def lock_head(session: Session) -> tuple[int, str]:
    """Lock the chain head in the session's transaction and return it (seq, hash)."""
    return _lock_head(session)


def create_checkpoint(*, session: Session, signer: Signer) -> AuditCheckpoint | None:
    """Verify the entries since the newest validly signed checkpoint, then sign the head; None if nothing new.

    Raises ``AuditChainBroken`` (a Conflict) instead of signing a head whose suffix does not verify.
    """
    from control_plane.audit.checkpoints import sign_verified_head, trusted_anchor  # imports this module

    return sign_verified_head(session, signer, trusted_anchor(session, signer.public_raw))


def list_checkpoints(*, session: Session, limit: int = 100) -> list[AuditCheckpoint]:
    """Return the newest checkpoints first."""
    return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(limit)))

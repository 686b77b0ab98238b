"""record() writes through the driver's own cursor: its rows must be stored exactly as the ORM stores them."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select

from control_plane.audit import service as audit
from control_plane.audit.models import AuditEntry
from control_plane.db.session import Database


def test_timestamp_is_stored_in_the_orm_format(database: Database) -> None:
    with database.transaction() as session:
        seq = audit.record(session, actor="operator:t", action="test.store", resource=("thing", "1"), data={"a": 1})
    with database.transaction(write=False) as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.seq == seq)).one()
        hashed_ts = datetime.fromisoformat(json.loads(entry.body)["ts"])
        # An equality filter compares the stored text on SQLite: it matches only if the formats agree.
        matched = session.scalar(select(AuditEntry.seq).where(AuditEntry.ts == hashed_ts))
    assert entry.ts == hashed_ts
    assert matched == seq
    assert (entry.actor, entry.action, entry.resource_type, entry.resource_id) == ("operator:t", "test.store",
                                                                                   "thing", "1")


def test_first_append_creates_the_head(database: Database) -> None:
    with database.transaction() as session:
        assert audit.record(session, actor="a:b", action="x", resource=("t", "1"), data={}) >= 1
    with database.transaction(write=False) as session:
        assert audit.verify(session=session, public_key=None).ok

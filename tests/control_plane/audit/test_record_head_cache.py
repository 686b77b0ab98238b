"""record() reuses the locked head within a transaction; savepoints and new transactions must re-read it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.db.session import Database


def _record(session: Session, index: int) -> int:
    return audit.record(session, actor="operator:t", action="test.append", resource=("thing", str(index)),
                        data={"i": index})


def _verified_count(database: Database) -> int:
    with database.transaction(write=False) as session:
        report = audit.verify(session=session, public_key=None)
    assert report.ok, report.reason
    return report.entries


def test_many_appends_in_one_transaction_chain(database: Database) -> None:
    with database.transaction() as session:
        assert [_record(session, i) for i in range(50)] == list(range(1, 51))
    with database.transaction() as session:
        assert _record(session, 50) == 51
    assert _verified_count(database) == 51


def test_rolled_back_savepoint_does_not_fork_the_chain(database: Database) -> None:
    with database.transaction() as session:
        _record(session, 0)
        savepoint = session.begin_nested()
        assert _record(session, 1) == 2
        savepoint.rollback()
        # The entry written inside the savepoint is gone, so the next one takes its number.
        assert _record(session, 2) == 2
    assert _verified_count(database) == 2


def test_released_savepoint_advances_the_outer_head(database: Database) -> None:
    with database.transaction() as session:
        _record(session, 0)
        with session.begin_nested():
            assert _record(session, 1) == 2
        assert _record(session, 2) == 3
    assert _verified_count(database) == 3


def test_rolled_back_transaction_is_not_remembered(database: Database) -> None:
    session = database.session()
    _record(session, 0)
    session.rollback()
    assert _record(session, 1) == 1
    session.commit()
    session.close()
    assert _verified_count(database) == 1

"""Exactly once on both engines: two approvers at once, two workers (replicas) racing, an abandoned claim."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from control_plane.approvals import service
from control_plane.approvals.execution import claim_next, execute_claimed
from control_plane.approvals.models import Proposal, RetrainRequest
from control_plane.approvals.schemas import ProposalCreate
from control_plane.audit.models import AuditEntry
from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.errors import Conflict
from control_plane.fleet.models import Device
from control_plane.registry.models import ModelVersion, RegisteredModel


def principal(name: str, role: Role) -> Principal:
    return Principal(f"tok_{name}_{role.value}", name, role, ROLE_SCOPES[role])


AGENT = principal("triage-bot", Role.AGENT)


def _no_factory() -> Any:
    raise AssertionError("these actions need no manifest factory")


def _seed(database: Database, devices: int = 0) -> None:
    with database.transaction() as session:
        model = RegisteredModel(name="digits", created_by="test")
        session.add(model)
        session.flush()
        session.add(ModelVersion(model_id=model.id, version=1, created_by="test"))
        session.add_all([Device(id=f"dev-{i}", created_by="test") for i in range(devices)])


def _propose(database: Database, action: dict[str, Any]) -> str:
    request = ProposalCreate.model_validate({"action": action, "expected_effect": "x"})
    with database.transaction() as session:
        proposal, _ = service.create(session=session, request=request, principal=AGENT)
        return proposal.id


RETRAIN = {"kind": "retrain.request", "model": "digits", "version": 1, "window_start": "2026-01-01T00:00:00Z",
           "window_end": "2026-01-02T00:00:00Z"}


def _count(database: Database, action: str) -> int:
    with database.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action))
                   or 0)


def _race_decisions(db_url: str, proposal_id: str) -> list[str]:
    """Alice approves and Bob rejects at the same instant, each through their own replica's engine."""
    replicas = [Database(db_url), Database(db_url)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(replica: Database, name: str, approve: bool) -> None:
        barrier.wait()
        try:
            with replica.transaction() as session:
                service.decide(session=session, proposal_id=proposal_id, approve=approve, reason="now",
                               principal=principal(name, Role.APPROVER))
            outcomes.append("approved" if approve else "rejected")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=decide, args=(replicas[0], "alice", True)),
               threading.Thread(target=decide, args=(replicas[1], "bob", False))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for replica in replicas:
        replica.dispose()
    return outcomes


def test_two_approvers_at_once_one_decision(db_url: str, database: Database) -> None:
    _seed(database)
    for _ in range(3):
        proposal_id = _propose(database, RETRAIN)
        outcomes = _race_decisions(db_url, proposal_id)
        assert len(outcomes) == 2 and outcomes.count("conflict") == 1
        with database.transaction(write=False) as session:
            final = session.get(Proposal, proposal_id)
            assert final is not None and final.state in ("approved", "rejected")
            assert final.decided_by == ("approver:alice" if final.state == "approved" else "approver:bob")
    assert _count(database, "proposal.approved") + _count(database, "proposal.rejected") == 3


def test_two_workers_execute_each_proposal_once(db_url: str, database: Database) -> None:
    _seed(database, devices=4)
    ids = [_propose(database, RETRAIN) for _ in range(6)]
    ids += [_propose(database, {"kind": "device.quarantine", "device_id": f"dev-{i}"}) for i in range(4)]
    with database.transaction() as session:
        for proposal_id in ids:
            service.decide(session=session, proposal_id=proposal_id, approve=True, reason="go",
                           principal=principal("alice", Role.APPROVER))
    executed: Counter[str] = Counter()
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        replica = Database(db_url)
        barrier.wait()
        try:
            while (claim := claim_next(replica, worker_id=name, lease_seconds=60, max_attempts=3)) is not None:
                if execute_claimed(replica, claim, _no_factory) == "executed":
                    executed[claim.proposal_id] += 1
        finally:
            replica.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert executed == Counter(dict.fromkeys(ids, 1))
    with database.transaction(write=False) as session:
        assert {p.state for p in session.scalars(select(Proposal))} == {"executed"}
        assert session.scalar(select(func.count()).select_from(RetrainRequest)) == 6
    assert _count(database, "proposal.executing") == 10 and _count(database, "proposal.executed") == 10
    assert _count(database, "device.quarantine") == 4 and _count(database, "retrain.request") == 6


def test_an_abandoned_claim_is_taken_over_and_runs_once(database: Database) -> None:
    _seed(database)
    proposal_id = _propose(database, RETRAIN)
    with database.transaction() as session:
        service.decide(session=session, proposal_id=proposal_id, approve=True, reason="go",
                       principal=principal("alice", Role.APPROVER))
    dead = claim_next(database, worker_id="dead", lease_seconds=60, max_attempts=3)
    assert dead is not None
    # The dead worker's execution transaction never committed. Within the lease nobody else takes it ...
    assert claim_next(database, worker_id="alive", lease_seconds=60, max_attempts=3) is None
    with database.transaction() as session:
        session.execute(update(Proposal).values(claimed_at=utcnow() - timedelta(seconds=120)))
    # ... after it, another worker does; the dead worker's late token is refused.
    alive = claim_next(database, worker_id="alive", lease_seconds=60, max_attempts=3)
    assert alive is not None and alive.token != dead.token
    assert execute_claimed(database, dead, _no_factory) == "executing"
    assert execute_claimed(database, alive, _no_factory) == "executed"
    assert execute_claimed(database, alive, _no_factory) == "executed"
    assert _count(database, "retrain.request") == 1
    with database.transaction(write=False) as session:
        proposal = session.get(Proposal, proposal_id)
        assert proposal is not None and proposal.attempts == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_claim_that_never_finishes_fails_after_max_attempts(database: Database) -> None:
    _seed(database)
    proposal_id = _propose(database, RETRAIN)
    with database.transaction() as session:
        service.decide(session=session, proposal_id=proposal_id, approve=True, reason="go",
                       principal=principal("alice", Role.APPROVER))
    for _ in range(2):
        assert claim_next(database, worker_id="crashy", lease_seconds=0.0, max_attempts=2) is not None
    assert claim_next(database, worker_id="crashy", lease_seconds=0.0, max_attempts=2) is None
    with database.transaction(write=False) as session:
        proposal = session.get(Proposal, proposal_id)
        assert proposal is not None and proposal.state == "failed" and "2 attempts" in (proposal.error or "")

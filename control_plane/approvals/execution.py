"""Exactly-once execution: claim an approved proposal, run its executor and record the outcome atomically.

1. The approval commits ``approved`` (decide(), one transaction).
2. A worker claims it: ``executing``, a fresh claim token, ``attempts + 1`` (SKIP LOCKED on PostgreSQL; SQLite
   writers hold the database lock), and commits, so the UI sees that execution started.
3. In a second transaction the worker locks the row, checks its token and the preconditions, runs the one
   executor registered for the kind through the domain service, and marks ``executed`` -- all in one commit.
   A crash (kill -9) before that commit undoes the action and the mark together; the claim's lease then runs
   out and a worker (this replica after a restart, or another) claims it again. While a worker holds the row
   lock, no other can re-claim it, so an action is never applied twice.
4. A domain error (the rollout is already rolled back, a gate failed) marks ``failed`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from control_plane.approvals.executors import ExecutionContext, executor_for
from control_plane.approvals.models import Proposal
from control_plane.approvals.schemas import ProposalState
from control_plane.approvals.service import action_of, changed_preconditions, expire_due, get, timeline
from control_plane.audit import service as audit
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.errors import Conflict, EdgeloopError
from control_plane.fleet.manifests import ManifestFactory, factory_for
from control_plane.incidents.schemas import TimelineKind
from control_plane.settings import Settings
from control_plane.workers import PeriodicWorker, Worker

log = logging.getLogger(__name__)
EXECUTOR_ACTOR = "system:approval-executor"


@dataclass(frozen=True)
class Claim:
    """A claimed proposal and the token that proves this worker owns the claim."""

    proposal_id: str
    token: str


def _claimable(lease_seconds: float) -> Any:
    stale = utcnow() - timedelta(seconds=lease_seconds)
    return or_(Proposal.state == ProposalState.APPROVED.value,
               and_(Proposal.state == ProposalState.EXECUTING.value, Proposal.claimed_at < stale))


def has_work(database: Database, lease_seconds: float) -> bool:
    """Return whether anything is claimable: a cheap read, so an idle SQLite worker never takes the write lock."""
    with database.transaction(write=False) as session:
        return session.scalar(select(Proposal.id).where(_claimable(lease_seconds)).limit(1)) is not None


def _fail(session: Session, proposal: Proposal, error: str, actor: str = EXECUTOR_ACTOR) -> None:
    proposal.state, proposal.error, proposal.updated_at = ProposalState.FAILED.value, error[:4000], utcnow()
    session.flush()
    audit.record(session, actor=actor, action="proposal.failed", resource=("proposal", proposal.id),
                 data={"kind": proposal.kind, "error": error[:1000], "attempts": proposal.attempts})
    timeline(session, proposal, TimelineKind.EXECUTION, actor, {"status": "failed", "error": error[:1000]})


def claim_next(database: Database, *, worker_id: str, lease_seconds: float, max_attempts: int) -> Claim | None:
    """Claim the oldest approved (or abandoned executing) proposal; None when there is none to run."""
    with database.transaction() as session:
        query = select(Proposal).where(_claimable(lease_seconds)).order_by(Proposal.decided_at).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        proposal = session.scalar(query)
        if proposal is None:
            return None
        reclaimed = proposal.state == ProposalState.EXECUTING
        if proposal.attempts >= max_attempts:
            _fail(session, proposal, f"gave up after {proposal.attempts} attempts that did not finish")
            return None
        token = secrets.token_hex(8)
        proposal.state, proposal.claim_token, proposal.claimed_at = ProposalState.EXECUTING.value, token, utcnow()
        proposal.attempts += 1
        proposal.updated_at = proposal.claimed_at
        session.flush()
        audit.record(session, actor=EXECUTOR_ACTOR, action="proposal.executing", resource=("proposal", proposal.id),
                     data={"kind": proposal.kind, "attempt": proposal.attempts, "reclaimed": reclaimed,
                           "worker": worker_id, "idempotency_key": proposal.idempotency_key})
        timeline(session, proposal, TimelineKind.EXECUTION, EXECUTOR_ACTOR,
                 {"status": "started", "attempt": proposal.attempts, "reclaimed": reclaimed})
        return Claim(proposal.id, token)


def execute_claimed(database: Database, claim: Claim, factory: Callable[[], ManifestFactory],
                    hold_seconds: float = 0.0) -> str:
    """Run a claimed proposal's executor and mark it executed in the same commit; return the final state."""
    try:
        with database.transaction() as session:
            proposal = get(session=session, proposal_id=claim.proposal_id, lock=True)
            if proposal.state != ProposalState.EXECUTING or proposal.claim_token != claim.token:
                return proposal.state  # another worker took over after our lease ran out
            action = action_of(proposal)
            executor = executor_for(action)
            changed = changed_preconditions(proposal.preconditions, executor.snapshot(session, action))
            if changed:
                raise Conflict(f"stale at execution: {changed}", changed=changed)
            result = executor.execute(session, action, ExecutionContext(factory, proposal))
            proposal.state, proposal.executed_at, proposal.result = ProposalState.EXECUTED.value, utcnow(), result
            proposal.updated_at = proposal.executed_at
            session.flush()
            audit.record(session, actor=EXECUTOR_ACTOR, action="proposal.executed", resource=("proposal", proposal.id),
                         data={"kind": proposal.kind, "result": result, "attempt": proposal.attempts,
                               "idempotency_key": proposal.idempotency_key})
            timeline(session, proposal, TimelineKind.EXECUTION, EXECUTOR_ACTOR, {"status": "executed",
                                                                                 "result": result})
            if hold_seconds:
                # Crash tests only: the action is done but not committed; a kill -9 now must undo it.
                log.warning("approval %s executed, holding its transaction %.1fs before commit", proposal.id,
                            hold_seconds)
                time.sleep(hold_seconds)
            return ProposalState.EXECUTED.value
    except EdgeloopError as exc:
        with database.transaction() as session:
            proposal = get(session=session, proposal_id=claim.proposal_id, lock=True)
            if proposal.state == ProposalState.EXECUTING and proposal.claim_token == claim.token:
                _fail(session, proposal, exc.message)
            return proposal.state


class ApprovalExecutor:
    """Claim and execute approved proposals as they appear; safe to run on every replica."""

    name = "approval-executor"

    def __init__(self, database: Database, factory: Callable[[], ManifestFactory], settings: Settings) -> None:
        self.database, self.factory, self.settings = database, factory, settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def run_once(self) -> bool:
        """Claim and run one proposal; return whether there may be more."""
        settings = self.settings
        if not has_work(self.database, settings.approval_lease_seconds):
            return False
        claim = claim_next(self.database, worker_id=self.worker_id, lease_seconds=settings.approval_lease_seconds,
                           max_attempts=settings.approval_max_attempts)
        if claim is not None:
            execute_claimed(self.database, claim, self.factory, settings.approval_execution_hold_seconds)
        return True

    async def _run(self) -> None:
        while True:
            try:
                more = await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("approval executor step failed")
                more = False
            if not more:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.approval_poll_seconds)


def approval_workers(app: Any, settings: Settings) -> list[Worker]:
    """Return the executor and the expiry worker; the executor is kept on app.state for wake-ups."""
    database: Database = app.state.database
    executor = ApprovalExecutor(database, lambda: factory_for(app.state), settings)
    app.state.approval_executor = executor

    def expire() -> None:
        with database.transaction() as session:
            expire_due(session=session)

    return [executor, PeriodicWorker("approval-expiry", settings.approval_expiry_seconds, expire,
                                     final_step=False)]

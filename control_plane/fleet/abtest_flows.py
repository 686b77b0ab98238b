"""Evaluate running A/B tests; a winner at the horizon becomes a promotion proposal, never a silent promotion."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.approvals import service as approvals
from control_plane.approvals.schemas import MAX_EXPIRY_SECONDS, ExperimentPromote, ProposalCreate, Risk
from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal
from control_plane.db.session import Database
from control_plane.fleet import abtest
from control_plane.fleet.abtest_models import Experiment
from control_plane.fleet.abtest_schemas import ExperimentRead
from control_plane.settings import Settings
from control_plane.telemetry.lookup import BaselineCache
from control_plane.workers import PeriodicWorker

log = logging.getLogger(__name__)
# Proposes like an agent does: it can never approve, and four eyes hold for every human approver.
PROPOSER = Principal(token_id="system:ab-experiments", name="ab-experiments", role=Role.AGENT,
                     scopes=ROLE_SCOPES[Role.AGENT])


def _propose(session: Session, experiment: Experiment, read: ExperimentRead) -> str:
    assert read.winner is not None
    arms = "; ".join(f"v{a.version}: {a.correct}/{a.n} = {a.rate:.4f}" for a in read.arms if a.rate is not None)
    p_values = ", ".join(f"arm {c.arm}: p={c.p_value:.3g}" for c in read.comparisons if c.p_value is not None)
    proposal, _ = approvals.create(session=session, principal=PROPOSER, request=ProposalCreate(
        action=ExperimentPromote(kind="experiment.promote", experiment_id=experiment.id,
                                 version=read.winner["version"]),
        expected_effect=(f"{experiment.model_name} v{read.winner['version']} won A/B test {experiment.id} at its "
                         f"fixed horizon ({read.required_per_arm} labelled outcomes per arm; {arms}; {p_values}); "
                         "rolling it out to the whole group in waves")[:2000],
        risk=Risk.MEDIUM, expires_in_seconds=MAX_EXPIRY_SECONDS, idempotency_key=f"experiment-{experiment.id}-promote"))
    experiment.proposal_id = proposal.id
    session.flush()
    return proposal.id


def evaluate(session: Session, baselines: BaselineCache, experiment_id: str) -> ExperimentRead:
    """Report on an experiment; at the horizon freeze its decision and propose promoting a winner (once)."""
    experiment = abtest.get_experiment(session=session, experiment_id=experiment_id, lock=True)
    if abtest.stop_if_rollout_ended(session, experiment, PROPOSER.actor):
        return abtest.report(session, experiment, baselines)
    read = abtest.report(session, experiment, baselines)
    decided = abtest.record_decision(session, experiment, read, PROPOSER.actor)
    if experiment.state == abtest.DECIDED and experiment.proposal_id is None:
        _propose(session, experiment, read)
        decided = True
    return abtest.report(session, experiment, baselines) if decided else read


def evaluate_running(database: Database, baselines: BaselineCache) -> int:
    """Evaluate every running (or decided but not yet proposed) experiment, one transaction each."""
    with database.transaction(write=False) as session:
        due = list(session.scalars(select(Experiment.id).where(
            (Experiment.state == abtest.RUNNING)
            | ((Experiment.state == abtest.DECIDED) & Experiment.proposal_id.is_(None)))))
    for experiment_id in due:
        try:
            with database.transaction() as session:
                evaluate(session, baselines, experiment_id)
        except Exception:  # one broken experiment must not stop the others
            log.exception("evaluating experiment %s failed", experiment_id)
    return len(due)


def experiment_worker(app: Any, settings: Settings) -> PeriodicWorker:
    """Return the periodic evaluator of running A/B tests."""
    database: Database = app.state.database
    baselines = BaselineCache()
    return PeriodicWorker("ab-experiments", settings.experiment_evaluate_seconds,
                          lambda: evaluate_running(database, baselines), final_step=False)

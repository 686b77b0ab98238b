"""A/B test routes: list experiments, read one (arms, n, rates, intervals, p-values, required n, decision)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from control_plane.constraints import Label, Name
from control_plane.deps import Reader, SessionDep, Writer
from control_plane.drift.routes import baseline_cache
from control_plane.fleet import abtest, abtest_flows
from control_plane.fleet.abtest_schemas import ExperimentRead

router = APIRouter(prefix="/experiments", tags=["fleet"])


@router.get("", response_model=list[ExperimentRead])
def list_experiments(request: Request, session: SessionDep, _: Reader, state: Label | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ExperimentRead]:
    """List A/B tests, newest first, each with its current report."""
    baselines = baseline_cache(request)
    return [abtest.report(session, e, baselines) for e in abtest.list_experiments(session=session, state=state,
                                                                                 limit=limit)]


@router.get("/{experiment_id}", response_model=ExperimentRead)
def get_experiment(experiment_id: Name, request: Request, session: SessionDep, _: Reader) -> ExperimentRead:
    """Return an A/B test (by its id or its rollout's id): per-arm outcomes, tests, required n and the decision."""
    experiment = abtest.get_experiment(session=session, experiment_id=experiment_id)
    return abtest.report(session, experiment, baseline_cache(request))


@router.post("/{experiment_id}/evaluate", response_model=ExperimentRead)
def evaluate_experiment(experiment_id: Name, request: Request, session: SessionDep, _: Writer) -> ExperimentRead:
    """Evaluate now instead of at the worker's next run: at the horizon the decision is frozen and a winner proposed."""
    return abtest_flows.evaluate(session, baseline_cache(request), experiment_id)

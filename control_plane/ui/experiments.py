"""A/B test pages: per-arm devices, labelled outcomes, accuracy with intervals, tests, required n and the decision."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from control_plane.deps import SessionDep
from control_plane.drift.routes import baseline_cache
from control_plane.fleet import abtest
from control_plane.ui.auth import CurrentViewer
from control_plane.ui.rendering import render

router = APIRouter(prefix="/ui/fleet/experiments", include_in_schema=False)
ExperimentId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/{experiment_id}")
def experiment_page(request: Request, experiment_id: ExperimentId, viewer: CurrentViewer, session: SessionDep
                    ) -> Response:
    """Show one A/B test (by its id or its rollout's id); the promotion goes through the approval queue."""
    experiment = abtest.get_experiment(session=session, experiment_id=experiment_id)
    report = abtest.report(session, experiment, baseline_cache(request))
    return render(request, "experiment.html", {"viewer": viewer, "title": f"A/B test {report.id}", "x": report})

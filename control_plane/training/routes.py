"""Training routes: job states and results, and labelled rows for stored telemetry windows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.constraints import Name
from control_plane.deps import Reader, SessionDep, Writer
from control_plane.training import jobs, service
from control_plane.training.schemas import JobRead, JobState, RowsCreate, RowsResult

router = APIRouter(prefix="/training", tags=["training"])


@router.get("/jobs", response_model=list[JobRead])
def list_jobs(session: SessionDep, _: Reader, state: JobState | None = None,
              incident_id: Annotated[Name | None, Query()] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobRead]:
    """List training jobs, newest first: state, outcome, challenger, comparison and timings."""
    return [JobRead.model_validate(j) for j in jobs.list_jobs(session=session, state=state, incident_id=incident_id,
                                                               limit=limit)]


@router.get("/jobs/{job_id}", response_model=JobRead)
def get_job(job_id: Name, session: SessionDep, _: Reader) -> JobRead:
    """Return one training job."""
    return JobRead.model_validate(jobs.get_job(session=session, job_id=job_id))


@router.post("/rows", response_model=RowsResult)
def post_rows(body: RowsCreate, session: SessionDep, principal: Writer) -> RowsResult:
    """Attach labelled feature rows to stored telemetry windows; retraining jobs learn from them."""
    return service.post_rows(session=session, request=body, actor=principal.actor)

"""Eval routes: datasets and their versions, runs, comparison."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status

from control_plane.constraints import Name as Identifier
from control_plane.deps import Reader, SessionDep, SettingsDep, Writer
from control_plane.evals import datasets, service
from control_plane.evals.models import EvalDataset, EvalDatasetVersion, EvalRun
from control_plane.evals.schemas import (
    DatasetRead,
    DatasetVersionCreate,
    DatasetVersionRead,
    EvalRunCreate,
    EvalRunRead,
    Name,
    RunComparison,
    SampleResultRead,
)
from control_plane.prompts.models import PromptVersion
from control_plane.settings import Settings

router = APIRouter(tags=["evals"])
Limit = Annotated[int, Query(ge=1, le=1000)]


def eval_environment(request: Request, settings: Settings) -> service.EvalEnvironment:
    """Use the app's RAG store if one is attached (app.state.rag_store), else the one settings describe."""
    return service.environment(settings, store=getattr(request.app.state, "rag_store", None))


def dataset_version_read(version: EvalDatasetVersion, *, with_samples: bool = False) -> DatasetVersionRead:
    """Present a dataset version, with its samples on request."""
    return DatasetVersionRead(id=version.id, dataset_name=version.dataset.name, version=version.version,
                              content_hash=version.content_hash, collection=version.collection,
                              sample_count=version.sample_count, commit_message=version.commit_message,
                              created_by=version.created_by, created_at=version.created_at,
                              samples=version.samples if with_samples else None)


def dataset_read(dataset: EvalDataset) -> DatasetRead:
    """Present a dataset with its latest version number."""
    return DatasetRead(id=dataset.id, name=dataset.name, description=dataset.description,
                       created_by=dataset.created_by, created_at=dataset.created_at,
                       latest_version=dataset.versions[-1].version if dataset.versions else None)


def run_read(session: SessionDep, run: EvalRun, *, with_samples: bool = False) -> EvalRunRead:
    """Present an eval run with its dataset and prompt references."""
    prompt = None
    if run.prompt_version_id:
        version = session.get(PromptVersion, run.prompt_version_id)
        prompt = f"{version.prompt.name}@{version.version}" if version else None
    dataset_version = run.dataset_version
    return EvalRunRead(
        id=run.id, dataset=dataset_version.dataset.name, dataset_version=dataset_version.version,
        dataset_version_id=dataset_version.id, prompt_version_id=run.prompt_version_id, prompt=prompt,
        scorer_tier=run.scorer_tier, scorer=run.scorer, generator=run.generator, config=run.config,
        metrics=run.metrics, thresholds=run.thresholds, checks=run.checks, passed=run.passed,
        sample_count=run.sample_count, created_by=run.created_by, created_at=run.created_at,
        samples=[SampleResultRead.model_validate(s) for s in run.samples] if with_samples else None,
    )


@router.post("/eval-datasets/{name}/versions", status_code=status.HTTP_201_CREATED, response_model=DatasetVersionRead)
def create_dataset_version(name: Name, body: DatasetVersionCreate, session: SessionDep,
                           caller: Writer) -> DatasetVersionRead:
    """Store an immutable dataset version (the dataset is created on first use); same content is a 409."""
    version, _ = datasets.create_version(session=session, name=name, request=body, actor=caller.actor)
    return dataset_version_read(version)


@router.get("/eval-datasets", response_model=list[DatasetRead])
def list_datasets(session: SessionDep, _: Reader, limit: Limit = 100) -> list[DatasetRead]:
    """List eval datasets."""
    return [dataset_read(d) for d in datasets.list_datasets(session=session, limit=limit)]


@router.get("/eval-datasets/{name}", response_model=list[DatasetVersionRead])
def list_dataset_versions(name: Identifier, session: SessionDep, _: Reader) -> list[DatasetVersionRead]:
    """List a dataset's versions, oldest first."""
    return [dataset_version_read(v) for v in datasets.get_dataset(session=session, name=name).versions]


@router.get("/eval-datasets/{name}/versions/{version}", response_model=DatasetVersionRead)
def get_dataset_version(name: Identifier, version: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep,
                        _: Reader) -> DatasetVersionRead:
    """Return one dataset version with its samples."""
    found = datasets.resolve(session=session, ref=f"{name}@{version}")
    return dataset_version_read(found, with_samples=True)


@router.post("/eval-runs", status_code=status.HTTP_201_CREATED, response_model=EvalRunRead)
def create_run(body: EvalRunCreate, request: Request, session: SessionDep, settings: SettingsDep,
               caller: Writer) -> EvalRunRead:
    """Run an eval now; the result says which scorer tier judged it and whether it passed its thresholds.

    The run is scored inside this request, so it has a budget (``EDGELOOP_EVAL_RUN_BUDGET_SECONDS``): a run that
    passes it is stopped with a 413 and stores nothing.
    """
    env = eval_environment(request, settings)
    run = service.create_run(session=session, request=body, actor=caller.actor, env=env)
    return run_read(session, run, with_samples=True)


@router.get("/eval-runs", response_model=list[EvalRunRead])
def list_runs(session: SessionDep, _: Reader, prompt_version_id: Identifier | None = None,
              limit: Limit = 100) -> list[EvalRunRead]:
    """List eval runs, newest first."""
    return [run_read(session, r) for r in service.list_runs(session=session, prompt_version_id=prompt_version_id,
                                                            limit=limit)]


@router.get("/eval-runs/compare", response_model=RunComparison)
def compare_runs(session: SessionDep, _: Reader, base: Annotated[str, Query(min_length=1, max_length=200)],
                 head: Annotated[str, Query(min_length=1, max_length=200)]) -> RunComparison:
    """Compare two runs: per-metric deltas and per-sample pass/fail flips."""
    return service.compare(session=session, base_id=base, head_id=head)


@router.get("/eval-runs/{run_id}", response_model=EvalRunRead)
def get_run(run_id: Identifier, session: SessionDep, _: Reader) -> EvalRunRead:
    """Return one run with its per-sample results and claim verdicts."""
    return run_read(session, service.get_run(session=session, run_id=run_id), with_samples=True)

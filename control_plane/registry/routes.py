"""Registry routes: datasets, runs, models, versions, aliases, artifacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from control_plane.auth.roles import Role
from control_plane.constraints import INT32_MAX, Name, ParamNonNegativeInt64
from control_plane.deps import Reader, ReaderOrDevice, SessionDep, Writer, json_response
from control_plane.errors import PayloadTooLarge, error_responses
from control_plane.fleet.service import require_manifest_for
from control_plane.registry import artifacts, service
from control_plane.registry.download import ArtifactFileResponse
from control_plane.registry.models import ModelAlias, ModelVersion, RegisteredModel
from control_plane.registry.schemas import (
    AliasRead,
    AliasSet,
    ArtifactAttach,
    ArtifactRead,
    BlobRead,
    DatasetCreate,
    DatasetRead,
    ModelCreate,
    ModelRead,
    ModelUpdate,
    RunCreate,
    RunRead,
    Sha256,
    VersionCreate,
    VersionRead,
)
from control_plane.registry.store import ArtifactStore

router = APIRouter(tags=["registry"])
Limit = Annotated[int, Query(ge=1, le=1000)]
VersionPath = Annotated[int, Path(ge=1, le=INT32_MAX)]
AliasPath = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_-]*$")]


def artifact_store(request: Request) -> ArtifactStore:
    """Return this app's artifact store."""
    store: ArtifactStore = request.app.state.artifact_store
    return store


def artifact_read(artifact: artifacts.Artifact) -> ArtifactRead:
    """Present an artifact with its download path."""
    read = ArtifactRead.model_validate(artifact)
    read.download_path = f"/api/v1/artifacts/sha256/{artifact.sha256}"
    return read


def version_read(version: ModelVersion, model_name: str, aliases: list[str],
                 artifact_rows: list[artifacts.Artifact]) -> VersionRead:
    """Present a version of the model ``model_name`` with its aliases and artifacts."""
    return VersionRead(
        id=version.id, model_name=model_name, version=version.version, run_id=version.run_id,
        description=version.description, tags=version.tags, metrics=version.metrics,
        created_by=version.created_by, created_at=version.created_at,
        aliases=aliases, artifacts=[artifact_read(a) for a in artifact_rows],
    )


def alias_read(pointer: ModelAlias) -> AliasRead:
    """Present an alias pointer."""
    return AliasRead(alias=pointer.alias, version=pointer.version.version, version_id=pointer.version_id,
                     protected=pointer.protected, updated_at=pointer.updated_at, updated_by=pointer.updated_by)


def model_read(model: RegisteredModel, latest_version: int | None, aliases: list[ModelAlias]) -> ModelRead:
    """Present a model with its latest version number and aliases."""
    # Built field by field: model_validate(model) would try to validate the ORM alias rows as AliasRead.
    return ModelRead(id=model.id, name=model.name, description=model.description, tags=model.tags,
                     created_by=model.created_by, created_at=model.created_at, latest_version=latest_version,
                     aliases=[alias_read(a) for a in aliases])


def stored_model_read(session: SessionDep, model: RegisteredModel) -> ModelRead:
    """Present a stored model: one query for its latest version, one for its aliases."""
    return model_read(model, service.latest_version_number(session=session, model_id=model.id), model.aliases)


@router.post("/datasets", status_code=status.HTTP_201_CREATED, response_model=DatasetRead, response_model_by_alias=True)
def create_dataset(body: DatasetCreate, session: SessionDep, caller: Writer) -> DatasetRead:
    """Register a dataset version with its fingerprint, schema and drift baseline."""
    return DatasetRead.model_validate(service.create_dataset(session=session, request=body, actor=caller.actor))


@router.get("/datasets", response_model=list[DatasetRead], response_model_by_alias=True)
def list_datasets(session: SessionDep, _: Reader, name: Name | None = None, limit: Limit = 100) -> list[DatasetRead]:
    """List datasets, newest first."""
    return [DatasetRead.model_validate(d) for d in service.list_datasets(session=session, name=name, limit=limit)]


@router.get("/datasets/{dataset_id}", response_model=DatasetRead, response_model_by_alias=True)
def get_dataset(dataset_id: Name, session: SessionDep, _: Reader) -> DatasetRead:
    """Return one dataset."""
    return DatasetRead.model_validate(service.get_dataset(session=session, dataset_id=dataset_id))


@router.post("/runs", status_code=status.HTTP_201_CREATED, response_model=RunRead)
def create_run(body: RunCreate, session: SessionDep, caller: Writer) -> RunRead:
    """Record a training run."""
    return RunRead.model_validate(service.create_run(session=session, request=body, actor=caller.actor))


@router.get("/runs/{run_id}", response_model=RunRead)
def get_run(run_id: Name, session: SessionDep, _: Reader) -> RunRead:
    """Return one training run."""
    return RunRead.model_validate(service.get_run(session=session, run_id=run_id))


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=ModelRead)
def create_model(body: ModelCreate, session: SessionDep, caller: Writer) -> Response:
    """Register a model name."""
    # A model just created has no versions and no aliases: nothing to read back.
    model = service.create_model(session=session, request=body, actor=caller.actor)
    return json_response(model_read(model, None, []), status.HTTP_201_CREATED)


@router.get("/models", response_model=list[ModelRead])
def list_models(
    session: SessionDep, _: Reader, limit: Limit = 100, offset: ParamNonNegativeInt64 = 0
) -> list[ModelRead]:
    """List registered models."""
    return [stored_model_read(session, m) for m in service.list_models(session=session, limit=limit, offset=offset)]


@router.get("/models/{name}", response_model=ModelRead)
def get_model(name: Name, session: SessionDep, _: Reader) -> ModelRead:
    """Return a model with its aliases."""
    return stored_model_read(session, service.get_model(session=session, name=name))


@router.patch("/models/{name}", response_model=ModelRead)
def update_model(name: Name, body: ModelUpdate, session: SessionDep, caller: Writer) -> ModelRead:
    """Change a model's description or tags."""
    return stored_model_read(session, service.update_model(session=session, name=name, request=body,
                                                           actor=caller.actor))


@router.post("/models/{name}/versions", status_code=status.HTTP_201_CREATED, response_model=VersionRead)
def create_version(name: Name, body: VersionCreate, session: SessionDep, caller: Writer) -> Response:
    """Create an immutable model version."""
    # A version just created has no aliases and no artifacts yet: nothing to read back.
    version = service.create_version(session=session, model_name=name, request=body, actor=caller.actor)
    return json_response(version_read(version, name, [], []), status.HTTP_201_CREATED)


@router.get("/models/{name}/versions", response_model=list[VersionRead])
def list_versions(name: Name, session: SessionDep, _: Reader) -> list[VersionRead]:
    """List a model's versions."""
    model = service.get_model(session=session, name=name)
    aliases: dict[str, list[str]] = {}
    for pointer in model.aliases:  # one query for every version's aliases
        aliases.setdefault(pointer.version_id, []).append(pointer.alias)
    return [version_read(v, model.name, sorted(aliases.get(v.id, [])), v.artifacts) for v in model.versions]


# The hot calls return json_response(...): serialised once, without FastAPI re-validating against response_model.
# The two hot reads are async: their three prebuilt indexed lookups on the request's read session (which never
# waits for a lock) cost less than the worker-thread hop a sync route takes.
@router.get("/models/{name}/versions/{version}", response_model=VersionRead)
async def get_version(name: Name, version: VersionPath, session: SessionDep, _: Reader) -> Response:
    """Return one version with its artifacts."""
    return json_response(service.read_version(session=session, model_name=name, version=version))


@router.get("/models/{name}/aliases/{alias}", response_model=VersionRead)
async def resolve_alias(name: Name, alias: AliasPath, session: SessionDep, _: Reader) -> Response:
    """Return the version an alias points at."""
    return json_response(service.read_version(session=session, model_name=name, alias=alias))


@router.put("/models/{name}/aliases/{alias}", response_model=AliasRead)
def set_alias(name: Name, alias: AliasPath, body: AliasSet, session: SessionDep, caller: Writer) -> Response:
    """Point an alias at a version (protected aliases need an approver)."""
    pointer = service.set_alias(session=session, model_name=name, alias=alias, version=body.version,
                                protected=body.protected, principal=caller)
    return json_response(alias_read(pointer))


@router.delete("/models/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
def delete_alias(name: Name, alias: AliasPath, session: SessionDep, caller: Writer) -> Response:
    """Remove an alias."""
    service.delete_alias(session=session, model_name=name, alias=alias, principal=caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# The body is read as a raw stream, so FastAPI cannot infer it: describe it for clients and fuzzers.
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary", "minLength": 1}}}}}


@router.post("/artifacts", status_code=status.HTTP_201_CREATED, response_model=BlobRead,
             responses=error_responses(413), openapi_extra=UPLOAD_BODY)
async def upload_blob(
    request: Request,
    session: SessionDep,
    caller: Writer,
    sha256: Annotated[Sha256 | None, Query(description="Expected sha256; a mismatch rejects the upload.")] = None,
    content_length: Annotated[int | None, Header()] = None,
) -> BlobRead:
    """Upload artifact bytes (streamed, size-limited, hash-verified, content-addressed)."""
    store = artifact_store(request)
    if content_length is not None and content_length > store.max_bytes:
        raise PayloadTooLarge(f"artifact exceeds the {store.max_bytes}-byte limit", limit=store.max_bytes)
    digest, size, _ = await store.put_stream(request.stream(), expected_sha256=sha256)
    # In a worker thread: on SQLite this write's first statement waits for the database lock, which must never
    # be waited for on the event loop (the holder needs the loop to reach its commit).
    _, created = await run_in_threadpool(artifacts.record_blob, session=session, sha256=digest, size=size,
                                         actor=caller.actor)
    return BlobRead(sha256=digest, size=size, created=created)


@router.get("/artifacts/sha256/{sha256}", response_class=FileResponse, responses={
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **error_responses(416)})
def download_blob(sha256: Sha256, request: Request, session: SessionDep,
                  caller: ReaderOrDevice) -> ArtifactFileResponse:
    """Download artifact bytes; supports Range so devices resume interrupted downloads."""
    artifacts.get_blob(session=session, sha256=sha256)
    if caller.role == Role.DEVICE:  # A device may fetch only what one of its manifests names.
        require_manifest_for(session=session, device_id=caller.device_id, sha256=sha256)
    path = artifact_store(request).open_existing(sha256)
    return ArtifactFileResponse(path, media_type="application/octet-stream", headers={"ETag": f'"{sha256}"'})


@router.post("/models/{name}/versions/{version}/artifacts", status_code=status.HTTP_201_CREATED,
             response_model=ArtifactRead)
def attach_artifact(
    name: Name, version: VersionPath, body: ArtifactAttach, request: Request, session: SessionDep, caller: Writer
) -> ArtifactRead:
    """Attach an uploaded blob to a model version."""
    artifact = artifacts.attach(session=session, store=artifact_store(request), model_name=name, version=version,
                                request=body, actor=caller.actor)
    return artifact_read(artifact)


@router.get("/artifacts/{artifact_id}", response_model=ArtifactRead)
def get_artifact(artifact_id: Name, session: SessionDep, _: Reader) -> ArtifactRead:
    """Return artifact metadata."""
    return artifact_read(artifacts.get_artifact(session=session, artifact_id=artifact_id))

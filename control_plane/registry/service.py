"""Datasets, runs, models, versions and aliases. Every mutation is audited and linked in lineage."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session, contains_eager

from control_plane.audit import service as audit
from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.db.base import utcnow
from control_plane.drift.baseline import BaselineError, baseline_from_dict
from control_plane.errors import Conflict, Forbidden, Invalid, NotFound
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.registry.models import (
    Artifact,
    Dataset,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    TrainingRun,
)
from control_plane.registry.schemas import (
    DEFAULT_PROTECTED_ALIASES,
    ArtifactRead,
    DatasetCreate,
    ModelCreate,
    ModelUpdate,
    RunCreate,
    VersionCreate,
    VersionRead,
)

_VERSIONS = cast(Table, ModelVersion.__table__)
_MODELS = cast(Table, RegisteredModel.__table__)
_ALIASES = cast(Table, ModelAlias.__table__)
_ARTIFACTS = cast(Table, Artifact.__table__)
# The hot read path's statements, built once: building ORM statements and loading entities per call cost more
# than SQLite's own work for these indexed lookups.
_VERSION_COLUMNS = (
    _VERSIONS.c.id, _MODELS.c.name.label("model_name"), _VERSIONS.c.version, _VERSIONS.c.run_id,
    _VERSIONS.c.description, _VERSIONS.c.tags, _VERSIONS.c.metrics, _VERSIONS.c.created_by, _VERSIONS.c.created_at,
)
_VERSION_BY_NUMBER = (
    select(*_VERSION_COLUMNS).join_from(_VERSIONS, _MODELS, _VERSIONS.c.model_id == _MODELS.c.id)
    .where(_MODELS.c.name == bindparam("model_name"), _VERSIONS.c.version == bindparam("version"))
)
_VERSION_BY_ALIAS = (
    select(*_VERSION_COLUMNS).join_from(_ALIASES, _MODELS, _ALIASES.c.model_id == _MODELS.c.id)
    .join(_VERSIONS, _VERSIONS.c.id == _ALIASES.c.version_id)
    .where(_MODELS.c.name == bindparam("model_name"), _ALIASES.c.alias == bindparam("alias"))
)
_ALIASES_OF_VERSION = (
    select(_ALIASES.c.alias).where(_ALIASES.c.version_id == bindparam("version_id")).order_by(_ALIASES.c.alias)
)
_ARTIFACTS_OF_VERSION = (
    select(_ARTIFACTS).where(_ARTIFACTS.c.model_version_id == bindparam("version_id"))
    .order_by(_ARTIFACTS.c.created_at)
)


# The write path's lookups, built once too (bound per call): statement construction showed up in the profile.
_MODEL_ID_BY_NAME = select(RegisteredModel.id).where(RegisteredModel.name == bindparam("name"))
_MODEL_BY_NAME = select(RegisteredModel).where(RegisteredModel.name == bindparam("name"))
_MODEL_BY_NAME_LOCKED = _MODEL_BY_NAME.with_for_update()
_LATEST_VERSION = select(func.max(ModelVersion.version)).where(ModelVersion.model_id == bindparam("model_id"))
_VERSION_OF_MODEL = select(ModelVersion).where(ModelVersion.model_id == bindparam("model_id"),
                                               ModelVersion.version == bindparam("version"))


def create_dataset(*, session: Session, request: DatasetCreate, actor: str) -> Dataset:
    """Register a dataset version; (name, version) is unique."""
    duplicate = session.scalar(
        select(Dataset.id).where(Dataset.name == request.name, Dataset.version == request.version)
    )
    if duplicate is not None:
        raise Conflict(f"dataset {request.name!r} version {request.version!r} already exists", id=duplicate)
    dataset = Dataset(
        name=request.name, version=request.version, fingerprint=request.fingerprint,
        description=request.description, schema_=request.schema_, baseline=checked_baseline(request.baseline),
        created_by=actor,
    )
    session.add(dataset)
    session.flush()
    audit.record(session, actor=actor, action="dataset.create", resource=("dataset", dataset.id),
                 data={"name": dataset.name, "version": dataset.version, "fingerprint": dataset.fingerprint})
    return dataset


def checked_baseline(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the baseline document with its content id after the strict schema check, or raise Invalid."""
    if document is None:
        return None
    try:
        return baseline_from_dict(document).to_dict()
    except BaselineError as exc:
        field = f"baseline.{getattr(exc, 'field', '')}".rstrip(".")
        raise Invalid(f"baseline is invalid: {exc}", field=field) from exc


def get_dataset(*, session: Session, dataset_id: str) -> Dataset:
    """Return a dataset or raise NotFound."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    return dataset


def list_datasets(*, session: Session, name: str | None = None, limit: int = 100) -> list[Dataset]:
    """Return datasets, newest first."""
    query = select(Dataset).order_by(Dataset.created_at.desc()).limit(limit)
    return list(session.scalars(query.where(Dataset.name == name) if name else query))


def create_run(*, session: Session, request: RunCreate, actor: str) -> TrainingRun:
    """Record a training run, linked to its dataset."""
    if request.dataset_id is not None:
        get_dataset(session=session, dataset_id=request.dataset_id)
    run = TrainingRun(name=request.name, dataset_id=request.dataset_id, params=request.params,
                      metrics=request.metrics, code_commit=request.code_commit, created_by=actor)
    session.add(run)
    session.flush()
    if run.dataset_id:
        lineage.link(session, (NodeKind.DATASET, run.dataset_id), (NodeKind.RUN, run.id), "trained")
    audit.record(session, actor=actor, action="run.create", resource=("run", run.id),
                 data={"name": run.name, "dataset_id": run.dataset_id, "code_commit": run.code_commit})
    return run


def get_run(*, session: Session, run_id: str) -> TrainingRun:
    """Return a run or raise NotFound."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    return run


def create_model(*, session: Session, request: ModelCreate, actor: str) -> RegisteredModel:
    """Register a model name."""
    if session.scalar(_MODEL_ID_BY_NAME, {"name": request.name}) is not None:
        raise Conflict(f"model {request.name!r} already exists")
    model = RegisteredModel(name=request.name, description=request.description, tags=request.tags,
                            created_by=actor)
    session.add(model)
    session.flush()
    audit.record(session, actor=actor, action="model.create", resource=("model", model.id),
                 data={"name": model.name})
    return model


def get_model(*, session: Session, name: str, lock: bool = False) -> RegisteredModel:
    """Return a model by name or raise NotFound; ``lock`` serialises writers on this model."""
    model = session.scalar(_MODEL_BY_NAME_LOCKED if lock else _MODEL_BY_NAME, {"name": name})
    if model is None:
        raise NotFound(f"model {name!r} not found")
    return model


def list_models(*, session: Session, limit: int = 100, offset: int = 0) -> list[RegisteredModel]:
    """Return models by name."""
    return list(session.scalars(select(RegisteredModel).order_by(RegisteredModel.name).limit(limit).offset(offset)))


def latest_version_number(*, session: Session, model_id: str) -> int | None:
    """Return the highest version number of a model, if any."""
    return session.scalar(_LATEST_VERSION, {"model_id": model_id})


def update_model(*, session: Session, name: str, request: ModelUpdate, actor: str) -> RegisteredModel:
    """Change a model's description or tags."""
    model = get_model(session=session, name=name)
    changes = request.model_dump(exclude_none=True)
    for field, value in changes.items():
        setattr(model, field, value)
    session.flush()
    audit.record(session, actor=actor, action="model.update", resource=("model", model.id), data=changes)
    return model


def create_version(*, session: Session, model_name: str, request: VersionCreate, actor: str) -> ModelVersion:
    """Create the next (or an explicitly numbered) immutable version."""
    model = get_model(session=session, name=model_name, lock=True)
    latest = latest_version_number(session=session, model_id=model.id) or 0
    number = request.version if request.version is not None else latest + 1
    # latest + 1 cannot exist (the model row is locked); only an explicit number needs the check.
    if number <= latest and session.scalar(
        select(ModelVersion.id).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
    ) is not None:
        raise Conflict(f"model {model_name!r} already has version {number}")
    if request.run_id is not None:
        get_run(session=session, run_id=request.run_id)
    # model_id=, not model=: setting the relationship appends to model.versions, which makes the unit of work
    # process the model and its collection too (a third of this call's CPU); the caller knows the model's name.
    version = ModelVersion(model_id=model.id, version=number, run_id=request.run_id,
                           description=request.description, tags=request.tags, metrics=request.metrics,
                           created_by=actor)
    session.add(version)
    session.flush()
    if version.run_id:
        lineage.link(session, (NodeKind.RUN, version.run_id), (NodeKind.MODEL_VERSION, version.id), "produced")
    audit.record(session, actor=actor, action="model_version.create", resource=("model_version", version.id),
                 data={"model": model_name, "version": number, "run_id": version.run_id})
    return version


def get_version(*, session: Session, model_name: str, version: int) -> ModelVersion:
    """Return one version of a model (with its model loaded) or raise NotFound."""
    found = session.scalar(
        select(ModelVersion).join(ModelVersion.model).options(contains_eager(ModelVersion.model))
        .where(RegisteredModel.name == model_name, ModelVersion.version == version)
    )
    if found is None:
        get_model(session=session, name=model_name)  # says which one is missing: the model or the version
        raise NotFound(f"model {model_name!r} has no version {version}")
    return found


def read_version(*, session: Session, model_name: str, version: int | None = None,
                 alias: str | None = None) -> VersionRead:
    """Present one version, found by number or by alias, with its aliases and artifacts: three indexed queries."""
    connection = session.connection()
    if alias is not None:
        row = connection.execute(_VERSION_BY_ALIAS, {"model_name": model_name, "alias": alias}).first()
    else:
        row = connection.execute(_VERSION_BY_NUMBER, {"model_name": model_name, "version": version}).first()
    if row is None:
        get_model(session=session, name=model_name)  # says which one is missing: the model or the version
        missing = f"alias {alias!r}" if alias is not None else f"version {version}"
        raise NotFound(f"model {model_name!r} has no {missing}")
    params = {"version_id": row.id}
    aliases = list(connection.execute(_ALIASES_OF_VERSION, params).scalars())
    artifacts = [ArtifactRead(**a._mapping, download_path=f"/api/v1/artifacts/sha256/{a.sha256}")
                 for a in connection.execute(_ARTIFACTS_OF_VERSION, params)]
    return VersionRead(**row._mapping, aliases=aliases, artifacts=artifacts)


def get_version_by_id(*, session: Session, version_id: str) -> ModelVersion:
    """Return a version by its id or raise NotFound."""
    found = session.get(ModelVersion, version_id)
    if found is None:
        raise NotFound(f"model version {version_id!r} not found")
    return found


def list_versions(*, session: Session, model_name: str) -> list[ModelVersion]:
    """Return every version of a model, oldest first."""
    return list(get_model(session=session, name=model_name).versions)


def resolve_alias(*, session: Session, model_name: str, alias: str) -> ModelVersion:
    """Return the version an alias points at (with its model loaded)."""
    found = session.scalar(
        select(ModelVersion).join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
        .join(ModelVersion.model).options(contains_eager(ModelVersion.model))
        .where(RegisteredModel.name == model_name, ModelAlias.alias == alias, ModelAlias.model_id == RegisteredModel.id)
    )
    if found is None:
        get_model(session=session, name=model_name)  # says which one is missing: the model or the alias
        raise NotFound(f"model {model_name!r} has no alias {alias!r}")
    return found


def set_alias(
    *, session: Session, model_name: str, alias: str, version: int, protected: bool | None, principal: Principal
) -> ModelAlias:
    """Point an alias at a version; protected aliases need the approve scope."""
    model = get_model(session=session, name=model_name, lock=True)
    target = session.scalar(_VERSION_OF_MODEL, {"model_id": model.id, "version": version})
    if target is None:
        raise NotFound(f"model {model_name!r} has no version {version}")
    pointer = session.get(ModelAlias, (model.id, alias))
    is_protected = alias in DEFAULT_PROTECTED_ALIASES or bool(pointer and pointer.protected) or bool(protected)
    changes_protection = protected is not None and pointer is not None and protected != pointer.protected
    if (is_protected or changes_protection) and Scope.APPROVE not in principal.scopes:
        raise Forbidden(f"alias {alias!r} is protected: only an approver or admin may move it",
                        required_scope=Scope.APPROVE.value)
    previous = pointer.version.version if pointer else None
    if pointer is None:
        # version=target, not version_id=: the response reads the target, and a populated relationship needs no
        # refresh from the database.
        pointer = ModelAlias(model_id=model.id, alias=alias, version=target, protected=is_protected,
                             updated_at=utcnow(), updated_by=principal.actor)
        session.add(pointer)
    else:
        pointer.version = target
        pointer.protected = protected if protected is not None else is_protected
        pointer.updated_at = utcnow()
        pointer.updated_by = principal.actor
    session.flush()
    audit.record(session, actor=principal.actor, action="model_alias.set", resource=("model", model.id),
                 data={"model": model_name, "alias": alias, "from_version": previous, "to_version": version,
                       "protected": pointer.protected})
    return pointer


def delete_alias(*, session: Session, model_name: str, alias: str, principal: Principal) -> None:
    """Remove an alias; protected ones need the approve scope."""
    model = get_model(session=session, name=model_name, lock=True)
    pointer = session.get(ModelAlias, (model.id, alias))
    if pointer is None:
        raise NotFound(f"model {model_name!r} has no alias {alias!r}")
    if (pointer.protected or alias in DEFAULT_PROTECTED_ALIASES) and Scope.APPROVE not in principal.scopes:
        raise Forbidden(f"alias {alias!r} is protected", required_scope=Scope.APPROVE.value)
    audit.record(session, actor=principal.actor, action="model_alias.delete", resource=("model", model.id),
                 data={"model": model_name, "alias": alias, "version": pointer.version.version})
    session.delete(pointer)
    session.flush()


def _label_datasets(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(Dataset.id, Dataset.name, Dataset.version).where(Dataset.id.in_(ids)))
    return {r.id: f"{r.name}@{r.version}" for r in rows}


def _label_runs(session: Session, ids: list[str]) -> dict[str, str]:
    return {r.id: r.name for r in session.execute(select(TrainingRun.id, TrainingRun.name)
                                                  .where(TrainingRun.id.in_(ids)))}


def _label_versions(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(
        select(ModelVersion.id, RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id).where(ModelVersion.id.in_(ids))
    )
    return {r.id: f"{r.name} v{r.version}" for r in rows}


lineage.register_labeler(NodeKind.DATASET, _label_datasets)
lineage.register_labeler(NodeKind.RUN, _label_runs)
lineage.register_labeler(NodeKind.MODEL_VERSION, _label_versions)

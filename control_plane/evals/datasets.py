"""Eval datasets: immutable, content-hashed versions of validated samples."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.evals.models import EvalDataset, EvalDatasetVersion
from control_plane.evals.schemas import REQUIRED_COLUMNS, DatasetVersionCreate, EvalSample


def _check_samples(request: DatasetVersionCreate) -> None:
    """Refuse empty contexts and duplicate ids before anything is written."""
    seen: set[str] = set()
    for index, sample in enumerate(request.samples):
        label = f"sample {index}" + (f" ({sample.id!r})" if sample.id else "")
        if sample.contexts is not None and not any(c.strip() for c in sample.contexts):
            raise Invalid(f"{label} has an empty context: give context text, or omit 'contexts' and set the "
                          "dataset's collection to retrieve from", sample=index, column="contexts")
        if sample.contexts is None and request.collection is None:
            raise Invalid(f"{label} has no contexts and the dataset names no collection to retrieve from",
                          sample=index, column="contexts")
        sample_id = sample.id or str(index)
        if sample_id in seen:
            raise Invalid(f"{label}: duplicate sample id {sample_id!r}", sample=index, column="id")
        seen.add(sample_id)


def content_hash(request: DatasetVersionCreate) -> str:
    """Return the sha256 of the samples and collection (descriptions are not content)."""
    body = {"collection": request.collection, "samples": [s.model_dump(exclude_none=True) for s in request.samples]}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def create_version(
    *, session: Session, name: str, request: DatasetVersionCreate, actor: str, allow_unchanged: bool = False
) -> tuple[EvalDatasetVersion, bool]:
    """Store the next version (creating the dataset on first use); identical content is a 409 or a no-op."""
    _check_samples(request)
    digest = content_hash(request)
    dataset = session.scalar(select(EvalDataset).where(EvalDataset.name == name).with_for_update())
    if dataset is None:
        dataset = EvalDataset(name=name, description=request.description, created_by=actor)
        session.add(dataset)
        session.flush()
        audit.record(session, actor=actor, action="eval_dataset.create", resource=("eval_dataset", dataset.id),
                     data={"name": name})
    existing = session.scalar(select(EvalDatasetVersion).where(EvalDatasetVersion.dataset_id == dataset.id,
                                                               EvalDatasetVersion.content_hash == digest))
    if existing is not None:
        if allow_unchanged:
            return existing, False
        raise Conflict(f"eval dataset {name!r} version {existing.version} already has this content",
                       version=existing.version)
    number = (session.scalar(select(func.max(EvalDatasetVersion.version))
                             .where(EvalDatasetVersion.dataset_id == dataset.id)) or 0) + 1
    version = EvalDatasetVersion(dataset_id=dataset.id, version=number, content_hash=digest,
                                 collection=request.collection, sample_count=len(request.samples),
                                 samples=[s.model_dump(exclude_none=True) for s in request.samples],
                                 commit_message=request.commit_message, created_by=actor)
    session.add(version)
    session.flush()
    audit.record(session, actor=actor, action="eval_dataset_version.create",
                 resource=("eval_dataset_version", version.id),
                 data={"dataset": name, "version": number, "content_hash": digest, "samples": version.sample_count})
    return version, True


def get_dataset(*, session: Session, name: str) -> EvalDataset:
    """Return a dataset by name or raise NotFound."""
    dataset = session.scalar(select(EvalDataset).where(EvalDataset.name == name))
    if dataset is None:
        raise NotFound(f"eval dataset {name!r} not found")
    return dataset


def list_datasets(*, session: Session, limit: int = 100) -> list[EvalDataset]:
    """Return datasets by name."""
    return list(session.scalars(select(EvalDataset).order_by(EvalDataset.name).limit(limit)))


def resolve(*, session: Session, ref: str) -> EvalDatasetVersion:
    """Resolve ``NAME`` (latest version) or ``NAME@N``."""
    name, _, number = ref.partition("@")
    dataset = get_dataset(session=session, name=name)
    if not number:
        if not dataset.versions:
            raise NotFound(f"eval dataset {name!r} has no versions")
        return dataset.versions[-1]
    found = session.scalar(select(EvalDatasetVersion).where(EvalDatasetVersion.dataset_id == dataset.id,
                                                            EvalDatasetVersion.version == int(number)))
    if found is None:
        raise NotFound(f"eval dataset {name!r} has no version {number}")
    return found


def parse_rows(raw: bytes, *, filename: str) -> list[dict[str, Any]]:
    """Parse a JSONL or CSV file into rows; refuse non-UTF-8 text and rows missing a required column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{filename} is not valid UTF-8 (byte {exc.start})") from exc
    if filename.endswith(".csv"):
        rows: list[dict[str, Any]] = []
        for row in csv.DictReader(io.StringIO(text)):
            item: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
            # In CSV, list columns hold JSON arrays, or a single plain string.
            for column in ("contexts", "relevant_sources"):
                if column in item:
                    value = item[column]
                    item[column] = json.loads(value) if value.lstrip().startswith("[") else [value]
            rows.append(item)
    else:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise Invalid(f"{filename} line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise Invalid(f"{filename} row {index}: expected an object")
        missing = [c for c in REQUIRED_COLUMNS if not row.get(c)]
        if missing:
            raise Invalid(f"{filename} row {index} is missing column(s): {', '.join(missing)}", row=index,
                          missing=missing)
    return [_normalise(row) for row in rows]


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    """Map retrieval-set columns onto samples: ``source`` is the relevant source, other extras become labels.

    Files are often exports with extra columns (e.g. evals/datasets/runbook-retrieval has source and heading);
    the API stays strict, a file keeps its extra columns as labels instead of being refused.
    """
    known = set(EvalSample.model_fields)
    sample = {k: v for k, v in row.items() if k in known}
    extras = {k: v for k, v in row.items() if k not in known}
    if "source" in extras and "relevant_sources" not in sample:
        sample["relevant_sources"] = [str(extras["source"])]
    if extras:
        sample["labels"] = {**extras, **(sample.get("labels") or {})}
    return sample


def build_request(rows: list[dict[str, Any]], **fields: Any) -> DatasetVersionCreate:
    """Validate parsed rows into a dataset version request, naming the first bad row and column."""
    samples = []
    for index, row in enumerate(rows):
        try:
            samples.append(EvalSample.model_validate(row))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise Invalid(f"row {index}: {where}: {first['msg']}", row=index) from exc
    try:
        return DatasetVersionCreate(samples=samples, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Invalid(f"invalid dataset: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc

"""Artifact blobs and their attachment to model versions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.registry import onnx_tools
from control_plane.registry.models import Artifact, ArtifactBlob, ModelVersion, RegisteredModel
from control_plane.registry.schemas import ArtifactAttach, ArtifactFormat
from control_plane.registry.service import get_version
from control_plane.registry.store import ArtifactStore


def record_blob(*, session: Session, sha256: str, size: int, actor: str) -> tuple[ArtifactBlob, bool]:
    """Record stored bytes; uploading the same content twice is a no-op."""
    blob = session.get(ArtifactBlob, sha256)
    if blob is not None:
        return blob, False
    blob = ArtifactBlob(sha256=sha256, size=size, created_by=actor)
    session.add(blob)
    session.flush()
    audit.record(session, actor=actor, action="artifact_blob.upload", resource=("artifact_blob", sha256),
                 data={"size": size})
    return blob, True


def get_blob(*, session: Session, sha256: str) -> ArtifactBlob:
    """Return a recorded blob or raise NotFound."""
    blob = session.get(ArtifactBlob, sha256)
    if blob is None:
        raise NotFound(f"artifact blob {sha256} not found")
    return blob


def attach(
    *, session: Session, store: ArtifactStore, model_name: str, version: int, request: ArtifactAttach, actor: str
) -> Artifact:
    """Attach an uploaded blob to a version, reading its I/O schema from the ONNX graph if not given."""
    model_version = get_version(session=session, model_name=model_name, version=version)
    blob = get_blob(session=session, sha256=request.sha256)
    if session.scalar(select(Artifact.id).where(Artifact.model_version_id == model_version.id,
                                                Artifact.sha256 == request.sha256)) is not None:
        raise Conflict(f"{model_name} v{version} already has artifact {request.sha256}")
    parent = None
    if request.parent_id is not None:
        parent = get_artifact(session=session, artifact_id=request.parent_id)
    input_schema, output_schema = request.input_schema, request.output_schema
    if request.format == ArtifactFormat.ONNX and (input_schema is None or output_schema is None):
        inspected_in, inspected_out = onnx_tools.inspect_schema(store.open_existing(blob.sha256).read_bytes())
        input_schema = input_schema if input_schema is not None else inspected_in
        output_schema = output_schema if output_schema is not None else inspected_out
    artifact = Artifact(
        model_version_id=model_version.id, sha256=blob.sha256, size=blob.size, format=request.format.value,
        quantization=request.quantization.value, parent_id=request.parent_id, input_schema=input_schema or {},
        output_schema=output_schema or {}, metrics=request.metrics, created_by=actor,
    )
    session.add(artifact)
    session.flush()
    lineage.link(session, (NodeKind.MODEL_VERSION, model_version.id), (NodeKind.ARTIFACT, artifact.id),
                 "packaged_as")
    if parent is not None:
        relation = "quantized_to" if parent.quantization != artifact.quantization else "derived"
        lineage.link(session, (NodeKind.ARTIFACT, parent.id), (NodeKind.ARTIFACT, artifact.id), relation)
    audit.record(session, actor=actor, action="artifact.attach", resource=("artifact", artifact.id),
                 data={"model": model_name, "version": version, "sha256": artifact.sha256,
                       "quantization": artifact.quantization, "parent_id": artifact.parent_id})
    return artifact


def get_artifact(*, session: Session, artifact_id: str) -> Artifact:
    """Return an artifact or raise NotFound."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFound(f"artifact {artifact_id!r} not found")
    return artifact


def pick_artifact(*, model_version: ModelVersion, quantization: str | None = None) -> Artifact:
    """Choose the artifact to ship: the requested quantisation, else int8, else the newest."""
    artifacts = list(model_version.artifacts)
    if not artifacts:
        raise Invalid(f"model version {model_version.id} has no artifacts")
    if quantization is not None:
        matching = [a for a in artifacts if a.quantization == quantization]
        if not matching:
            raise Invalid(f"model version {model_version.id} has no {quantization} artifact")
        return matching[-1]
    int8 = [a for a in artifacts if a.quantization == "int8"]
    return (int8 or artifacts)[-1]


def _label_artifacts(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(
        select(Artifact.id, Artifact.quantization, Artifact.format, RegisteredModel.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Artifact.model_version_id)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(Artifact.id.in_(ids))
    )
    return {r.id: f"{r.name} v{r.version} {r.format}/{r.quantization}" for r in rows}


lineage.register_labeler(NodeKind.ARTIFACT, _label_artifacts)

"""Register a trained challenger with its lineage, and propose its canary (never deploy it directly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.approvals import service as approvals
from control_plane.approvals.models import Proposal, RetrainRequest
from control_plane.approvals.schemas import ProposalCreate, Risk, RolloutCanary
from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal
from control_plane.drift.baseline import build_baseline
from control_plane.fleet.schemas import Selector
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.registry import artifacts, pipeline
from control_plane.registry import service as registry
from control_plane.registry.models import Dataset, ModelVersion
from control_plane.registry.schemas import ArtifactAttach, DatasetCreate, Quantization, RunCreate, VersionCreate
from control_plane.registry.store import ArtifactStore
from control_plane.training.data import Plan
from control_plane.training.jobs import WORKER_ACTOR
from control_plane.training.models import TrainingJob

CANARY_DECISION_SECONDS = 86_400  # a person has a day to look at the numbers before the proposal expires
# The worker proposes as an agent would: it may read and propose, never approve or execute.
TRAINING_PRINCIPAL = Principal(token_id="system:training", name="training-worker", role=Role.AGENT,
                               scopes=ROLE_SCOPES[Role.AGENT])


@dataclass(frozen=True)
class Built:
    """A trained and quantised challenger, its data and the comparison with the champion."""

    data: pipeline.TrainingData  # reference train + recent train rows; x_test is the reference test split
    fingerprint: str
    predicted_train: np.ndarray
    fp32: bytes
    int8: bytes
    params: dict[str, Any]
    sources: dict[str, Any]
    scores: dict[str, Any]
    decision: dict[str, Any]


def register_challenger(session: Session, store: ArtifactStore, job: TrainingJob, plan: Plan,
                        built: Built) -> ModelVersion:
    """Record the extended dataset, the run, the version and its fp32 and int8 artifacts, all linked."""
    data = built.data
    dataset = session.scalar(select(Dataset).where(Dataset.name == data.name,
                                                   Dataset.version == built.fingerprint[7:19]))
    if dataset is None:
        dataset = registry.create_dataset(session=session, actor=WORKER_ACTOR, request=DatasetCreate(
            name=data.name, version=built.fingerprint[7:19], fingerprint=built.fingerprint,
            description=f"{plan.dataset_name} (registered dataset {plan.dataset_id}) plus labelled rows of "
                        f"{len(plan.windows)} telemetry window(s) of cohort {job.cohort or 'all'} between "
                        f"{job.window_start.isoformat()} and {job.window_end.isoformat()}",
            schema_={"features": [{"name": n, "dtype": "float32"} for n in data.feature_names],
                     "target": {"classes": sorted(int(c) for c in np.unique(data.y_train))},
                     "rows": built.sources["rows"], "sources": built.sources},
            baseline=build_baseline(data.x_train, feature_names=data.feature_names,
                                    labels=built.predicted_train).to_dict()))
    lineage.link(session, (NodeKind.DATASET, plan.dataset_id), (NodeKind.DATASET, dataset.id), "extended_into")
    decision = built.decision
    run = registry.create_run(session=session, actor=WORKER_ACTOR, request=RunCreate(
        name=f"{job.model_name}-retrain", dataset_id=dataset.id, params=built.params,
        metrics={"accuracy_reference_int8": decision["challenger_reference"],
                 "accuracy_recent_int8": decision["challenger_recent"],
                 "int8_delta_vs_fp32": decision["challenger_int8_delta_vs_fp32"]}))
    version = registry.create_version(session=session, model_name=job.model_name, actor=WORKER_ACTOR,
                                      request=VersionCreate(
        run_id=run.id, description=f"challenger of v{job.model_version}, retrained by training job {job.id}",
        tags={"challenger_of": job.model_version, "training_job": job.id, "incident": job.incident_id},
        metrics={"accuracy": decision["challenger_reference"], "accuracy_recent": decision["challenger_recent"],
                 "accuracy_fp32": built.scores["challenger.fp32"]["reference"]["accuracy"]}))
    fp32_artifact = None
    for blob, quantization in ((built.fp32, Quantization.FP32), (built.int8, Quantization.INT8)):
        sha256, size, _ = store.put_bytes(blob)
        artifacts.record_blob(session=session, sha256=sha256, size=size, actor=WORKER_ACTOR)
        reference = built.scores[f"challenger.{quantization.value}"]["reference"]
        attached = artifacts.attach(session=session, store=store, model_name=job.model_name, version=version.version,
                                    actor=WORKER_ACTOR, request=ArtifactAttach(
            sha256=sha256, quantization=quantization, parent_id=fp32_artifact,
            metrics={"accuracy": reference["accuracy"], "latency_p50_us": reference["latency_p50_us"],
                     "latency_p99_us": reference["latency_p99_us"]}))
        fp32_artifact = fp32_artifact or attached.id
    job_node = (NodeKind.TRAINING_JOB, job.id)
    lineage.link(session, job_node, (NodeKind.RUN, run.id), "ran")
    lineage.link(session, (NodeKind.MODEL_VERSION, plan.champion_version_id), (NodeKind.MODEL_VERSION, version.id),
                 "challenged_by")
    return version


def link_job(session: Session, job: TrainingJob) -> None:
    """Link the job to what asked for it: the incident and the approved retrain proposal."""
    job_node = (NodeKind.TRAINING_JOB, job.id)
    if job.incident_id:
        lineage.link(session, (NodeKind.INCIDENT, job.incident_id), job_node, "retrained_by")
    request = session.get(RetrainRequest, job.retrain_request_id) if job.retrain_request_id else None
    if request is not None and request.proposal_id:
        lineage.link(session, (NodeKind.PROPOSAL, request.proposal_id), job_node, "executed_as")


def cohort_selector(job: TrainingJob, plan: Plan) -> Selector:
    """The canary's devices: the cohort's group, else the devices whose labelled rows trained the challenger."""
    if job.cohort.get("device_group"):
        return Selector(group=str(job.cohort["device_group"]))
    return Selector(device_ids=sorted({str(w["device_id"]) for w in plan.windows}))


def propose_canary(session: Session, job: TrainingJob, version: ModelVersion, plan: Plan,
                   decision: dict[str, Any]) -> Proposal:
    """Queue a rollout.canary proposal for a person to approve (idempotent by the job's id)."""
    action = RolloutCanary(kind="rollout.canary", model=job.model_name, version=version.version,
                           selector=cohort_selector(job, plan), training_job_id=job.id)
    evidence: list[dict[str, Any]] = [{"kind": "model_version", "id": version.id},
                                      {"kind": "model_version", "id": plan.champion_version_id}]
    if job.incident_id:
        evidence.append({"kind": "incident", "id": job.incident_id})
    request = ProposalCreate.model_validate({
        "action": action.model_dump(mode="json"), "incident_id": job.incident_id, "evidence": evidence,
        "risk": Risk.MEDIUM.value, "idempotency_key": f"training.{job.id}.canary",
        "expires_in_seconds": CANARY_DECISION_SECONDS,
        "expected_effect": (f"v{version.version} reaches the cohort in waves; its accuracy on the cohort's recent "
                            f"labelled rows was {decision['challenger_recent']} vs the champion's "
                            f"{decision['champion_recent']} ({decision['reason']})")[:2000]})
    proposal, _ = approvals.create(session=session, request=request, principal=TRAINING_PRINCIPAL)
    lineage.link(session, (NodeKind.TRAINING_JOB, job.id), (NodeKind.PROPOSAL, proposal.id), "proposed")
    return proposal

"""Model card and decision record bodies; every section says what is missing instead of inventing it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

CARD_SCHEMA = "edgeloop.model_card/v1"
DECISION_SCHEMA = "edgeloop.decision/v1"


class CardFormat(StrEnum):
    """How a card or decision record is returned."""

    JSON = "json"
    MARKDOWN = "markdown"


class AuditRef(BaseModel):
    """One audit entry behind a statement: its sequence number, time, actor and action."""

    seq: int
    ts: datetime
    actor: str
    action: str


class CardDataset(BaseModel):
    """The training data: name, version, fingerprint, size and feature schema as registered."""

    id: str
    name: str
    version: str
    fingerprint: str
    description: str
    rows: dict[str, int] | None = None
    features: list[dict[str, Any]] = Field(default_factory=list)
    target: dict[str, Any] | None = None


class CardTraining(BaseModel):
    """The training run that produced the version, with its dataset."""

    run_id: str
    run_name: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    code_commit: str | None
    created_by: str
    created_at: datetime
    dataset: CardDataset | None = None


class CardArtifact(BaseModel):
    """One packaged file of the version."""

    id: str
    sha256: str
    size: int
    format: str
    quantization: str
    parent_id: str | None
    metrics: dict[str, Any]


class CardQuantisation(BaseModel):
    """Full-precision versus int8: sizes and the accuracy given up."""

    fp32_bytes: int | None = None
    int8_bytes: int | None = None
    size_ratio: float | None = None
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    accuracy_delta: float | None = None


class CohortMetrics(BaseModel):
    """Metrics of one cohort, and where they come from (registration or labelled field telemetry)."""

    cohort: str
    source: Literal["registration", "field_labels"]
    metrics: dict[str, Any]


class CardMetrics(BaseModel):
    """Overall metrics at registration, labelled field accuracy, and per-cohort metrics."""

    registration: dict[str, Any] = Field(default_factory=dict)
    field: dict[str, Any] | None = None
    per_cohort: list[CohortMetrics] = Field(default_factory=list)


class Limitation(BaseModel):
    """A known limitation: stated by people at registration, or derived from alerts and metrics."""

    source: Literal["stated", "alert", "cohort_metrics"]
    text: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class CardRollout(BaseModel):
    """A rollout that shipped, rolled back or restored this version, with how its devices ended."""

    id: str
    kind: str
    role: Literal["deployed", "rolled_back", "restored"]
    state: str
    rollback_of: str | None
    reason: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    targets: dict[str, int]
    audit: list[AuditRef] = Field(default_factory=list)


class CardDeployment(BaseModel):
    """One deployment of an artifact of this version."""

    id: str
    artifact_id: str
    selector: dict[str, Any]
    created_by: str
    created_at: datetime
    audit_seq: int | None = None


class CardIncident(BaseModel):
    """An incident about this version (by model and version, or linked in lineage)."""

    id: str
    title: str
    state: str
    severity: str
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


class HumanDecision(BaseModel):
    """An approval proposal that touched this version: who proposed, who decided, when and why, and the outcome."""

    proposal_id: str
    kind: str
    target: str
    incident_id: str | None
    state: str
    proposer: str
    proposed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    executed_at: datetime | None
    result: dict[str, Any] | None
    verification: str | None
    verified_by: str | None
    audit: list[AuditRef] = Field(default_factory=list)


class ModelCard(BaseModel):
    """A model card generated from the registry, lineage, fleet, incidents, approvals and audit log."""

    schema_: str = Field(CARD_SCHEMA, alias="schema")
    model: str
    version: int
    version_id: str
    generated_at: datetime
    intended_use: str
    version_description: str
    registered_by: str
    registered_at: datetime
    aliases: list[str]
    lineage: list[str]
    training: CardTraining | None
    artifacts: list[CardArtifact]
    quantisation: CardQuantisation | None
    metrics: CardMetrics
    limitations: list[Limitation]
    deployments: list[CardDeployment]
    rollouts: list[CardRollout]
    incidents: list[CardIncident]
    decisions: list[HumanDecision]
    other_actions: list[AuditRef]
    missing: list[str]

    model_config = {"populate_by_name": True}


class DecisionEvidence(BaseModel):
    """The device status event a decision record rests on."""

    device_event_id: int
    event_id: str | None
    state: str
    received_at: datetime
    device_ts: float | None
    rollout_id: str | None
    sequence: int | None
    reported_model: dict[str, Any] | None


class ApprovalStep(BaseModel):
    """One link in the chain of people and approvals behind what a device ran."""

    step: str
    actor: str
    at: datetime
    audit_seq: int | None = None
    proposal_id: str | None = None
    reason: str | None = None


class DecisionRecord(BaseModel):
    """Which model (version, artifact, manifest, rollout) was active on a device at a time, and who decided it."""

    schema_: str = Field(DECISION_SCHEMA, alias="schema")
    device_id: str
    at: datetime
    status: Literal["active", "none_recorded"]
    rule: str
    model: str | None = None
    version: int | None = None
    version_id: str | None = None
    artifact_id: str | None = None
    artifact_sha256: str | None = None
    quantization: str | None = None
    manifest_sequence: int | None = None
    cutover_sequence: int | None = None
    rollout_id: str | None = None
    rollout_kind: str | None = None
    rollout_state: str | None = None
    rollback_of: str | None = None
    deployment_id: str | None = None
    evidence: DecisionEvidence | None = None
    approvals: list[ApprovalStep] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)

    model_config = {"populate_by_name": True}

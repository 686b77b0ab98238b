"""Incident bodies: states, the correlation rule, evidence references and the typed timeline entries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control_plane.alerts.schemas import Severity
from control_plane.constraints import INT32_MAX, Description, Name, ShortText


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class IncidentState(StrEnum):
    """open -> investigating -> mitigating -> resolved; dismissed (with a reason) from any active state."""

    OPEN = "open"
    INVESTIGATING = "investigating"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


ACTIVE_STATES = frozenset({IncidentState.OPEN, IncidentState.INVESTIGATING, IncidentState.MITIGATING})
TRANSITIONS: dict[IncidentState, frozenset[IncidentState]] = {
    IncidentState.OPEN: frozenset({IncidentState.INVESTIGATING, IncidentState.MITIGATING, IncidentState.RESOLVED,
                                   IncidentState.DISMISSED}),
    IncidentState.INVESTIGATING: frozenset({IncidentState.MITIGATING, IncidentState.RESOLVED,
                                            IncidentState.DISMISSED}),
    IncidentState.MITIGATING: frozenset({IncidentState.INVESTIGATING, IncidentState.RESOLVED,
                                         IncidentState.DISMISSED}),
    IncidentState.RESOLVED: frozenset({IncidentState.OPEN}),
    IncidentState.DISMISSED: frozenset(),
}

# The alert attributes a rule may key on; "evidence.<name>" reads a top-level evidence field (cohort, group).
ALERT_KEY_FIELDS = frozenset({"model_name", "model_version", "model_version_id", "deployment_id", "rollout_id",
                              "check", "feature", "monitor_id"})
RULE_KEY_PATTERN = rf"^({'|'.join(sorted(ALERT_KEY_FIELDS))}|evidence\.[A-Za-z0-9_]{{1,64}})$"
RuleKey = Annotated[str, Field(pattern=RULE_KEY_PATTERN, max_length=80)]


class CorrelationRule(StrictModel):
    """Alerts whose key values are equal correlate into one incident (see docs/incidents.md)."""

    keys: Annotated[list[RuleKey], Field(min_length=1, max_length=10)] = Field(
        default_factory=lambda: ["model_name", "model_version", "deployment_id", "evidence.device_group",
                                 "evidence.cohort"])
    window_seconds: Annotated[float, Field(gt=0, le=30 * 86_400)] = 900.0
    cooldown_seconds: Annotated[float, Field(ge=0, le=30 * 86_400)] = 3600.0

    @field_validator("keys")
    @classmethod
    def _once_each(cls, keys: list[str]) -> list[str]:
        return list(dict.fromkeys(keys))


class EvidenceKind(StrEnum):
    """What an evidence reference points at; each kind is checked to exist when it is written."""

    ALERT = "alert"
    INCIDENT = "incident"
    DRIFT_REPORT = "drift_report"
    ROLLOUT = "rollout"
    DEPLOYMENT = "deployment"
    MODEL_VERSION = "model_version"
    PROMPT_VERSION = "prompt_version"
    EVAL_RUN = "eval_run"
    DEVICE = "device"
    AUDIT_ENTRY = "audit_entry"


# Lax on purpose: JSON Schema calls 3.0 an integer, so a schema-valid 3.0 must be accepted.
Version = Annotated[int, Field(ge=1, le=INT32_MAX)]


class DriftQuery(StrictModel):
    """The query that reproduces a drift report: GET /drift/report with these parameters."""

    model: Name
    version: Version
    device_group: Name | None = None
    deployment_id: Name | None = None
    rollout_id: Name | None = None


class ResourceRef(StrictModel):
    """A pointer to a resource by id."""

    kind: Literal["alert", "incident", "rollout", "deployment", "model_version", "prompt_version", "eval_run",
                  "device", "audit_entry"]
    id: Name
    note: ShortText = ""


class DriftReportRef(StrictModel):
    """A drift report, by the query that reproduces it."""

    kind: Literal["drift_report"]
    query: DriftQuery
    note: ShortText = ""


EvidenceRef = Annotated[ResourceRef | DriftReportRef, Field(discriminator="kind")]
Evidence = Annotated[list[EvidenceRef], Field(max_length=50)]


class Hypothesis(StrictModel):
    """One ranked root-cause hypothesis with its confidence and the evidence behind it."""

    rank: Version
    title: Annotated[str, Field(min_length=1, max_length=300)]
    explanation: Description = ""
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    evidence: Annotated[list[EvidenceRef], Field(min_length=1, max_length=50)]


class _Authored(StrictModel):
    agent_run_id: Name | None = Field(default=None, description="The agent run that wrote this, if any.")


class TriageNote(_Authored):
    """An agent's or person's first assessment."""

    kind: Literal["triage_note"]
    summary: Annotated[str, Field(min_length=1, max_length=10_000)]
    assessed_severity: Severity | None = None
    suspected_scope: ShortText = ""
    evidence: Evidence = Field(default_factory=list)
    next_steps: Annotated[list[ShortText], Field(max_length=20)] = Field(default_factory=list)


class RcaReport(_Authored):
    """Ranked hypotheses: ranks 1..n, each once, confidence never higher than the rank above."""

    kind: Literal["rca_report"]
    summary: Annotated[str, Field(min_length=1, max_length=10_000)]
    hypotheses: Annotated[list[Hypothesis], Field(min_length=1, max_length=10)]

    @field_validator("hypotheses")
    @classmethod
    def _ranked(cls, hypotheses: list[Hypothesis]) -> list[Hypothesis]:
        ordered = sorted(hypotheses, key=lambda h: h.rank)
        if [h.rank for h in ordered] != list(range(1, len(ordered) + 1)):
            raise ValueError("ranks must be 1..n, each exactly once")
        for above, below in pairwise(ordered):
            if below.confidence > above.confidence:
                raise ValueError(f"rank {below.rank} has a higher confidence than rank {above.rank}")
        return ordered


class Comment(_Authored):
    """A human (or agent) remark."""

    kind: Literal["comment"]
    text: Annotated[str, Field(min_length=1, max_length=10_000)]


TimelinePost = Annotated[TriageNote | RcaReport | Comment, Field(discriminator="kind")]


class TimelineKind(StrEnum):
    """Every kind of timeline entry; the first three are posted, the rest written by the control plane."""

    TRIAGE_NOTE = "triage_note"
    RCA_REPORT = "rca_report"
    COMMENT = "comment"
    ALERT_JOINED = "alert_joined"
    STATE_CHANGE = "state_change"
    PROPOSAL = "proposal"
    DECISION = "decision"
    EXECUTION = "execution"
    VERIFICATION = "verification"


class TimelineEntryRead(BaseModel):
    """One timeline entry as stored."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    incident_id: str
    kind: TimelineKind
    author: str
    agent_run_id: str | None
    body: dict[str, Any]
    created_at: datetime


class IncidentCreate(StrictModel):
    """Open an incident by hand, optionally from alerts that belong to no incident yet."""

    title: Annotated[str, Field(min_length=1, max_length=300)]
    severity: Severity = Severity.WARNING
    alert_ids: Annotated[list[Name], Field(max_length=100)] = Field(default_factory=list)


class IncidentTransition(StrictModel):
    """Move an incident; a reason is required to dismiss."""

    state: IncidentState
    reason: ShortText = ""


class IncidentRead(BaseModel):
    """An incident with its alert ids."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    state: IncidentState
    severity: Severity
    correlation_key: str
    key_values: dict[str, Any]
    model_name: str | None
    model_version: int | None
    deployment_id: str | None
    alert_ids: list[str] = Field(default_factory=list)
    alert_count: int
    reopen_count: int
    first_alert_at: datetime | None
    last_alert_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    dismissed_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime | None


class IncidentPage(BaseModel):
    """A page of incidents, most recently active first."""

    items: list[IncidentRead]
    total: int

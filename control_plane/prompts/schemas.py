"""Prompt registry request and response bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.constraints import LIST_MAX, FiniteFloat, PositiveInt32
from control_plane.constraints import Label as ConstrainedLabel

# Metric name -> finite threshold (a gate compares against these).
MetricBounds = Annotated[dict[ConstrainedLabel, FiniteFloat], Field(max_length=100)]

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
LabelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_-]*$")]
# Prompts are short; a 1 MB "prompt" is an upload mistake, refused with a 422 naming the field.
MAX_TEMPLATE_CHARS = 100_000
TemplateText = Annotated[str, Field(max_length=MAX_TEMPLATE_CHARS)]
Summary = Annotated[str, Field(max_length=10_000)]

# Labels that always need an approver and a passing eval gate, whether or not they were created protected.
DEFAULT_PROTECTED_LABELS = frozenset({"production"})


class PromptKind(StrEnum):
    """A single text template, or a list of chat messages."""

    TEXT = "text"
    CHAT = "chat"


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class GateConfig(StrictModel):
    """The eval a version must pass before a protected label may point at it."""

    dataset: Annotated[str | None, Field(
        max_length=250, description="NAME or NAME@N; pinned to one version (NAME = its latest) when the gate is "
        "written. A gate without a dataset blocks protected label moves until an approver pins one.")] = None
    dataset_version_id: Annotated[str | None, Field(
        max_length=40, description="Set by the server to the pinned dataset version; a value sent is ignored")] = None
    minimums: MetricBounds = Field(default_factory=dict)
    maximums: MetricBounds = Field(default_factory=dict)


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: TemplateText


class ModelParams(BaseModel):
    """Model parameters stored with a version; unknown keys are kept (providers differ)."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str | None, Field(max_length=200)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    max_tokens: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    tools: list[ConstrainedLabel] = Field(default_factory=list, max_length=LIST_MAX)


class PromptCreate(StrictModel):
    name: Name
    kind: PromptKind = PromptKind.TEXT
    description: Summary = ""
    gate: GateConfig | None = None


class VersionCreate(StrictModel):
    template: TemplateText = ""
    messages: list[ChatMessage] = Field(default_factory=list, max_length=50)
    variables: list[Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] | None = Field(
        default=None, max_length=LIST_MAX, description="Declared variables; detected from the template when omitted."
    )
    model_params: ModelParams = Field(default_factory=ModelParams)
    commit_message: Summary = ""

    @model_validator(mode="after")
    def _one_body(self) -> VersionCreate:
        if bool(self.template) == bool(self.messages):
            raise ValueError("give exactly one of template (text prompt) or messages (chat prompt)")
        return self


class LabelSet(StrictModel):
    version: PositiveInt32
    protected: bool | None = None
    override_reason: Annotated[str | None, Field(min_length=10, max_length=2000)] = Field(
        default=None, description="Approver only: move a protected label without a passing eval, with this reason."
    )


class RenderRequest(StrictModel):
    ref: Annotated[str, Field(min_length=1, max_length=100)] = "production"
    variables: dict[str, Any] = Field(default_factory=dict)


class LabelRead(BaseModel):
    label: str
    version: int
    version_id: str
    protected: bool
    updated_at: datetime
    updated_by: str
    # What the last move relied on: the eval run and dataset version its gate judged (None: unprotected, or moved
    # by an override without a run).
    eval_run_id: str | None = None
    dataset_version_id: str | None = None


class PromptRead(BaseModel):
    id: str
    name: str
    kind: PromptKind
    description: str
    gate: dict[str, Any]
    created_by: str
    created_at: datetime
    latest_version: int | None = None
    labels: list[LabelRead] = Field(default_factory=list)


class VersionRead(BaseModel):
    id: str
    prompt_name: str
    kind: PromptKind
    version: int
    template: str
    messages: list[dict[str, str]]
    variables: list[str]
    model_params: dict[str, Any]
    commit_message: str
    content_hash: str
    source: str
    created_by: str
    created_at: datetime
    labels: list[str] = Field(default_factory=list)


class DiffRead(BaseModel):
    prompt_name: str
    from_version: int
    to_version: int
    diff: str
    changed: bool


class RenderRead(BaseModel):
    prompt_name: str
    version: int
    version_id: str
    text: str
    messages: list[dict[str, str]]
    model_params: dict[str, Any]


class GateCheckRead(BaseModel):
    metric: str
    value: float | None
    threshold: float
    higher_is_better: bool
    passed: bool


class GateDecision(BaseModel):
    """Why a protected label was (or would be) allowed to move."""

    passed: bool
    eval_run_id: str | None
    reason: str
    checks: list[GateCheckRead] = Field(default_factory=list)
    dataset: str | None = None
    dataset_version_id: str | None = None


class LabelMoveRead(LabelRead):
    gate: GateDecision | None = None
    overridden: bool = False


class AgentRunCreate(StrictModel):
    agent: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    input_summary: Summary = ""
    prompt_version_ids: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(default_factory=list,
                                                                                          max_length=50)
    outcome: Annotated[str, Field(min_length=1, max_length=40)]
    details: dict[str, Any] = Field(default_factory=dict)


class AgentRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent: str
    input_summary: str
    outcome: str
    prompt_version_ids: list[str]
    details: dict[str, Any]
    created_by: str
    created_at: datetime


class SyncReport(BaseModel):
    """What one sync of the prompts directory did, by prompt name."""

    created: list[str] = Field(default_factory=list)
    new_versions: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)

"""Eval request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from control_plane.constraints import FiniteFloat, Label, SmallJson

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
DatasetRef = Annotated[str, Field(min_length=1, max_length=250, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@\d+)?$")]
PromptRef = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[a-z0-9_-]+)?$")]
# The scorers refuse more than 200,000 characters; answers are capped lower so a 1 MB answer is a clear 422.
MAX_ANSWER_CHARS = 100_000
LongText = Annotated[str, Field(max_length=MAX_ANSWER_CHARS)]
# chromadb's own rule for collection names, checked here so a bad name is a 422 rather than a store error.
CollectionName = Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,198}[A-Za-z0-9]$")]
ScorerTier = Literal["auto", "offline", "llm"]
RetrievalMode = Literal["dense", "lexical", "hybrid"]
REQUIRED_COLUMNS = ("question",)


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class EvalSample(StrictModel):
    """One row: a question, its contexts (or a collection to retrieve from), an answer (or a prompt to make it)."""

    id: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    question: Annotated[str, Field(min_length=1, max_length=20_000)]
    contexts: list[LongText] | None = Field(default=None, max_length=50)
    answer: LongText | None = None
    reference_answer: LongText | None = None
    relevant_sources: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=50)
    variables: SmallJson = Field(default_factory=dict)
    labels: SmallJson = Field(default_factory=dict)


class DatasetVersionCreate(StrictModel):
    samples: list[EvalSample] = Field(min_length=1, max_length=5000)
    collection: CollectionName | None = None
    description: Annotated[str, Field(max_length=10_000)] = ""
    commit_message: Annotated[str, Field(max_length=10_000)] = ""


class DatasetVersionRead(BaseModel):
    id: str
    dataset_name: str
    version: int
    content_hash: str
    collection: str | None
    sample_count: int
    commit_message: str
    created_by: str
    created_at: datetime
    samples: list[dict[str, Any]] | None = None


class DatasetRead(BaseModel):
    id: str
    name: str
    description: str
    created_by: str
    created_at: datetime
    latest_version: int | None


class Thresholds(StrictModel):
    minimums: Annotated[dict[Label, FiniteFloat], Field(max_length=100)] = Field(default_factory=dict)
    maximums: Annotated[dict[Label, FiniteFloat], Field(max_length=100)] = Field(default_factory=dict)


class EvalRunCreate(StrictModel):
    dataset: DatasetRef
    prompt: PromptRef | None = Field(default=None, description="NAME@label or NAME@N: generate missing answers")
    scorer_tier: ScorerTier = "auto"
    k: Annotated[int, Field(ge=1, le=50)] = 4
    retrieval_mode: RetrievalMode = "lexical"
    thresholds: Thresholds | None = Field(default=None, description="Defaults to the prompt's gate thresholds")


class CheckRead(BaseModel):
    metric: str
    value: float | None
    threshold: float
    higher_is_better: bool
    passed: bool


class SampleResultRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sample_index: int
    sample_id: str
    answer: str
    contexts: list[dict[str, Any]]
    metrics: dict[str, Any]
    claims: list[dict[str, Any]]
    passed: bool
    note: str


class EvalRunRead(BaseModel):
    id: str
    dataset: str
    dataset_version: int
    dataset_version_id: str
    prompt_version_id: str | None
    prompt: str | None
    scorer_tier: str
    scorer: str
    generator: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    checks: list[CheckRead]
    passed: bool
    sample_count: int
    created_by: str
    created_at: datetime
    samples: list[SampleResultRead] | None = None


class MetricDelta(BaseModel):
    base: float | None
    head: float | None
    delta: float | None


class SampleFlip(BaseModel):
    sample_id: str
    base_passed: bool
    head_passed: bool
    base_faithfulness: float | None
    head_faithfulness: float | None


class RunComparison(BaseModel):
    base_run_id: str
    head_run_id: str
    same_dataset_version: bool
    metrics: dict[str, MetricDelta]
    flips: list[SampleFlip]
    regressions: int
    fixes: int

"""Registry request and response bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from control_plane.constraints import (
    Description,
    Label,
    LargeJson,
    PositiveInt32,
    ShortText,
    SmallJson,
)
from control_plane.constraints import (
    Name as Identifier,
)

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
AliasName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_-]*$")]
Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


# Aliases that always need an approver, whether or not they were created protected.
DEFAULT_PROTECTED_ALIASES = frozenset({"production"})


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class ReadModel(BaseModel):
    """Built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


class DatasetCreate(StrictModel):
    name: Name
    version: Label
    fingerprint: Annotated[str, Field(min_length=8, max_length=100, pattern=r"^[\x20-\x7e]+$")]
    description: Description = ""
    schema_: LargeJson = Field(default_factory=dict, alias="schema")
    baseline: LargeJson | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatasetRead(ReadModel):
    id: str
    name: str
    version: str
    fingerprint: str
    description: str
    schema_: dict[str, Any] = Field(serialization_alias="schema")
    baseline: dict[str, Any] | None
    created_by: str
    created_at: datetime


class RunCreate(StrictModel):
    name: Name
    dataset_id: Identifier | None = None
    params: SmallJson = Field(default_factory=dict)
    metrics: SmallJson = Field(default_factory=dict)
    code_commit: Annotated[ShortText | None, Field(max_length=100)] = None


class RunRead(ReadModel):
    id: str
    name: str
    dataset_id: str | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    code_commit: str | None
    created_by: str
    created_at: datetime


class ModelCreate(StrictModel):
    name: Name
    description: Description = ""
    tags: SmallJson = Field(default_factory=dict)


class ModelUpdate(StrictModel):
    description: Description | None = None
    tags: SmallJson | None = None


class AliasRead(BaseModel):
    alias: str
    version: int
    version_id: str
    protected: bool
    updated_at: datetime
    updated_by: str


class ModelRead(ReadModel):
    id: str
    name: str
    description: str
    tags: dict[str, Any]
    created_by: str
    created_at: datetime
    latest_version: int | None = None
    aliases: list[AliasRead] = Field(default_factory=list)


class VersionCreate(StrictModel):
    version: PositiveInt32 | None = None
    run_id: Identifier | None = None
    description: Description = ""
    tags: SmallJson = Field(default_factory=dict)
    metrics: SmallJson = Field(default_factory=dict)


class ArtifactFormat(StrEnum):
    ONNX = "onnx"


class Quantization(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    UINT8 = "uint8"


class ArtifactAttach(StrictModel):
    sha256: Sha256
    format: ArtifactFormat = ArtifactFormat.ONNX
    quantization: Quantization = Quantization.FP32
    parent_id: Identifier | None = None
    input_schema: LargeJson | None = None
    output_schema: LargeJson | None = None
    metrics: SmallJson = Field(default_factory=dict)


class ArtifactRead(ReadModel):
    id: str
    model_version_id: str
    sha256: str
    size: int
    format: str
    quantization: str
    parent_id: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    metrics: dict[str, Any]
    created_by: str
    created_at: datetime
    download_path: str = ""


class VersionRead(ReadModel):
    id: str
    model_name: str
    version: int
    run_id: str | None
    description: str
    tags: dict[str, Any]
    metrics: dict[str, Any]
    created_by: str
    created_at: datetime
    aliases: list[str] = Field(default_factory=list)
    artifacts: list[ArtifactRead] = Field(default_factory=list)


class AliasSet(StrictModel):
    version: PositiveInt32
    protected: bool | None = None


class BlobRead(BaseModel):
    sha256: str
    size: int
    created: bool

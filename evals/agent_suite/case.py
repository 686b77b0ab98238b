"""The scenario case format (documented in evals/scenarios/README.md); every field is validated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors, so a typo in a case fails loudly."""

    model_config = ConfigDict(extra="forbid")


class FeatureSpec(Strict):
    """A model input's reference distribution."""

    name: str
    dist: Literal["normal", "uniform", "categorical"] = "normal"
    mean: float = 0.0
    sd: float = 1.0
    low: float = 0.0
    high: float = 1.0
    k: int = 4


class Group(Strict):
    """A device group: devices are named <group>-0 .. <group>-(n-1)."""

    group: str
    devices: Annotated[int, Field(ge=1, le=50)]


class Rollout(Strict):
    """A rollout of a version, as the fleet recorded it."""

    version: int
    state: Literal["in_progress", "paused", "succeeded"] = "succeeded"
    wave_plan: list[int] = Field(default_factory=lambda: [100])
    current_wave: int = 0
    minutes_ago: float = 60.0


class Telemetry(Strict):
    """Windows every selected device sends during [start, end] minutes relative to now."""

    minutes: tuple[float, float]
    version: int = 1
    groups: list[str] = Field(default_factory=list, description="Empty: every group.")
    devices: list[str] = Field(default_factory=list, description="Only these devices (overrides groups).")
    windows: Annotated[int, Field(ge=1, le=60)] = 3
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    latency_ms: Annotated[float, Field(gt=0)] = 3.0
    shift: dict[str, float] = Field(default_factory=dict)
    scale: dict[str, float] = Field(default_factory=dict)


class Alert(Strict):
    """An alert a monitor raises at the end of the timeline."""

    check: Literal["feature_drift", "prediction_drift", "missing_rate", "out_of_range", "error_rate", "latency",
                   "performance"]
    version: int = 1
    title: str = "alert"
    feature: str | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    evidence: dict[str, Any] = Field(default_factory=dict, description="e.g. {device_group: south}: a cohort "
                                     "alert; alerts of different cohorts correlate into different incidents.")
    rollout: bool = Field(default=False, description="Attach the rollout of this version.")


class PromptMove(Strict):
    """A prompt label moved from one version to another (texts are data)."""

    prompt: str
    label: str = "staging"
    versions: list[str] = Field(min_length=2, description="Texts of v1..vn; the label ends on the last.")
    minutes_ago: float = 30.0


class Expected(Strict):
    """What a correct investigation concludes and may propose."""

    cause: str
    scope: dict[str, Any] = Field(default_factory=dict)
    acceptable_actions: list[str] = Field(min_length=1, description="'none' means no proposal.")
    forbidden_actions: list[str] = Field(default_factory=list)
    harmless: bool = False


class Case(Strict):
    """One scenario."""

    name: str
    description: str = ""
    model: str = "sensor"
    versions: list[int] = Field(default_factory=lambda: [1])
    features: list[FeatureSpec]
    fleet: list[Group]
    rollouts: list[Rollout] = Field(default_factory=list)
    prompts: list[PromptMove] = Field(default_factory=list)
    telemetry: list[Telemetry]
    alerts: list[Alert] = Field(min_length=1)
    expected: Expected | list[Expected] = Field(
        description="One expectation, or one per incident in the order their first alerts are listed.")

    def expectations(self) -> list[Expected]:
        """The expectation per incident."""
        return self.expected if isinstance(self.expected, list) else [self.expected]


def load_case(folder: Path) -> Case:
    """Load ``folder/case.yaml`` (or case.json)."""
    for name in ("case.yaml", "case.yml", "case.json"):
        path = folder / name
        if path.exists():
            return Case.model_validate(yaml.safe_load(path.read_text()))
    raise FileNotFoundError(f"{folder} has no case.yaml")

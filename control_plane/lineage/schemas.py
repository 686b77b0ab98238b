"""Lineage graph bodies."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class NodeKind(StrEnum):
    """Every kind of node the lineage graph knows."""

    DATASET = "dataset"
    RUN = "run"
    MODEL_VERSION = "model_version"
    ARTIFACT = "artifact"
    DEPLOYMENT = "deployment"
    ROLLOUT = "rollout"
    PROMPT_VERSION = "prompt_version"
    EVAL_RUN = "eval_run"
    AGENT_RUN = "agent_run"
    ALERT = "alert"
    INCIDENT = "incident"
    PROPOSAL = "proposal"
    TRAINING_JOB = "training_job"


class Direction(StrEnum):
    """Which way to walk from the root."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"
    BOTH = "both"


class LineageNode(BaseModel):
    """A node, labelled when its domain can name it."""

    kind: NodeKind
    id: str
    label: str | None = None


class LineageEdgeRead(BaseModel):
    """A directed edge between two nodes."""

    src: str
    dst: str
    relation: str


class LineageGraph(BaseModel):
    """The subgraph reachable from ``root``; node keys are ``kind:id``."""

    root: str
    nodes: list[LineageNode]
    edges: list[LineageEdgeRead]

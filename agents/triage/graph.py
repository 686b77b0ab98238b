"""The triage graph: assess -> write note."""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.runs import Deps
from agents.triage import nodes
from agents.triage.state import TriageInput, TriageState


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None, client: ControlPlaneClient, llm: LlmClient | None,
                **options: Any) -> Any:
    """Compile the triage graph."""
    deps = Deps(client=client, llm=llm, **options)
    graph = StateGraph(TriageState, input_schema=TriageInput)
    graph.add_node("assess", partial(nodes.assess, deps=deps))
    graph.add_node("write_note", partial(nodes.write_note, deps=deps))
    graph.add_edge(START, "assess")
    graph.add_edge("assess", "write_note")
    graph.add_edge("write_note", END)
    return graph.compile(checkpointer=checkpointer)

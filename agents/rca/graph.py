"""The root-cause analysis graph: gather -> score -> explain -> report."""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.rca import nodes
from agents.rca.state import RcaInput, RcaState
from agents.runs import Deps


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None, client: ControlPlaneClient, llm: LlmClient | None,
                **options: Any) -> Any:
    """Compile the RCA graph for one client and (optional) LLM."""
    deps = Deps(client=client, llm=llm, **options)
    graph = StateGraph(RcaState, input_schema=RcaInput)
    for name in ("gather_evidence", "score_causes", "explain", "post_report"):
        graph.add_node(name, partial(getattr(nodes, name), deps=deps))
    graph.add_edge(START, "gather_evidence")
    graph.add_edge("gather_evidence", "score_causes")
    graph.add_edge("score_causes", "explain")
    graph.add_edge("explain", "post_report")
    graph.add_edge("post_report", END)
    return graph.compile(checkpointer=checkpointer)

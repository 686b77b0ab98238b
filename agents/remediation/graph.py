"""The remediation graph: plan -> propose -> (interrupt until executed) -> verify."""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.remediation import nodes
from agents.remediation.state import RemediationInput, RemediationState
from agents.runs import Deps


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None, client: ControlPlaneClient, llm: LlmClient | None,
                **options: Any) -> Any:
    """Compile the remediation graph; the proposal is made in its own node, before the interrupt node."""
    deps = Deps(client=client, llm=llm, **options)
    graph = StateGraph(RemediationState, input_schema=RemediationInput)
    for name in ("plan", "propose", "await_execution", "verify", "await_telemetry"):
        graph.add_node(name, partial(getattr(nodes, name), deps=deps))
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", nodes.after_plan, {"propose": "propose", "__end__": END})
    graph.add_conditional_edges("propose", nodes.after_propose, {"await_execution": "await_execution", "__end__": END})
    graph.add_conditional_edges("await_execution", nodes.after_wait,
                                {"verify": "verify", "await_execution": "await_execution", "__end__": END})
    graph.add_conditional_edges("verify", nodes.after_verify, {"await_telemetry": "await_telemetry", "__end__": END})
    graph.add_edge("await_telemetry", "verify")
    return graph.compile(checkpointer=checkpointer)

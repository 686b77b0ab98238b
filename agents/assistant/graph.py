"""The assistant graph: one answering node over a checkpointed thread; events stream through the writer."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from agents.assistant.intents import route
from agents.assistant.nodes import HANDLERS, NEEDS_LLM, TEMPLATED, Answer, TurnInput, _items
from agents.assistant.state import AssistantState, Turn
from agents.assistant.tools import ToolBox
from agents.control_plane_client import ControlPlaneClient

# Answer "chunks": a line or a sentence at a time, so a client can render as text arrives.
_CHUNKS = re.compile(r"[^\n]*?(?:[.!?](?=\s)|\n|$)\s*")


def answer(state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
    """Route the question, run the intent's tools, stream the templated answer and cite the evidence."""
    settings = config.get("configurable", {})
    write = get_stream_writer()

    def emit(kind: str, data: dict[str, Any]) -> None:
        write({"event": kind, "data": data})

    client: ControlPlaneClient = settings["client"]
    tools = ToolBox(client, emit, max_calls=int(settings.get("max_tool_calls", 8)))
    question = state["question"]
    context = state.get("context") or {}
    llm_answer: Callable[..., Answer] | None = settings.get("llm_answer")
    models = _model_names(tools)
    routed = route(question, models=models, groups=[], context=context)
    turn = TurnInput(entities=routed.entities, tools=tools, search_runbooks=settings["search_runbooks"],
                     thread_id=settings["thread_id"], question=question,
                     clock=settings.get("clock", time.time), models=models)
    mode, prompt_version = "templated", None
    if routed.intent in HANDLERS and not (llm_answer and routed.how == "none"):
        result = HANDLERS[routed.intent](turn)
        text = f"{TEMPLATED}\n{result.text}"
    elif llm_answer is not None:
        result = llm_answer(question=question, context=context, tools=tools, turn=turn)
        text, mode, prompt_version = result.text, "llm", result.entities.get("prompt_version")
    else:
        result = Answer(NEEDS_LLM)
        text, mode = result.text, "needs_llm"
    for piece in _CHUNKS.findall(text):
        if piece:
            emit("chunk", {"text": piece})
    citations = [{"kind": "tool", "id": c["id"], "tool": c["tool"], "status": c["status"]} for c in tools.calls]
    citations += [{"kind": "runbook", "document": h["document"], "heading": h["heading"], "chunk_id": h["chunk_id"]}
                  for h in result.runbook_hits]
    emit("citations", {"citations": citations})
    entities = {k: v for k, v in {**routed.entities, **result.entities}.items() if v is not None}
    reply: Turn = {"role": "assistant", "text": text, "intent": routed.intent, "mode": mode, "tools": tools.calls,
                   "citations": citations, "prompt_version": prompt_version}
    new_context = {"intent": routed.intent, "entities": entities} if routed.intent != "open_ended" else context
    return {"turns": [{"role": "user", "text": question}, reply], "context": new_context}


def _model_names(tools: ToolBox) -> list[str]:
    result = tools.call("list_models", {})
    return [m["name"] for m in _items(result.data) if "name" in m] if result.ok else []


def build_graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """Compile the assistant graph over ``checkpointer`` (threads are checkpointer thread ids)."""
    graph = StateGraph(AssistantState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer)

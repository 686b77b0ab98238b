"""Assistant threads: create, read and answer, checkpointed with LangGraph; every read is checked for ownership."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from agents.assistant.graph import build_graph
from agents.assistant.llm import LlmAnswerer, LlmError
from agents.checkpoint import open_checkpointer
from agents.control_plane_client import ControlPlaneClient
from control_plane.assistant.schemas import ThreadRead
from control_plane.errors import NotFound
from control_plane.rag.store import RUNBOOKS, RagStore
from control_plane.settings import Settings

log = logging.getLogger(__name__)
RUNBOOK_DIR = Path(__file__).resolve().parents[2] / "runbooks"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
DOCS = "docs"


def checkpoint_url(settings: Settings) -> str:
    """Return the threads' checkpointer URL: the setting, the PostgreSQL database, else a SQLite file."""
    if settings.assistant_checkpoint_url:
        return settings.assistant_checkpoint_url
    database = settings.resolved_database_url
    if database.startswith(("postgresql", "postgres://")):
        return database.replace("postgresql+psycopg://", "postgresql://")
    return f"sqlite:///{settings.data_dir / 'assistant' / 'checkpoints.db'}"


class Runbooks:
    """The runbooks and the product docs in the RAG store, ingested once per app (idempotent by content hash)."""

    def __init__(self, data_dir: Path, root: Path = RUNBOOK_DIR, docs: Path | None = DOCS_DIR) -> None:
        self._data_dir = data_dir
        self._roots = {RUNBOOKS: root} | ({DOCS: docs} if docs is not None and docs.is_dir() else {})
        self._store: RagStore | None = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Ingest now (the server calls this at start, so the first question does not pay for it)."""
        with self._lock:
            if self._store is None:
                store = RagStore(data_dir=self._data_dir / "rag")
                for collection, root in self._roots.items():
                    store.ingest(collection, root)
                self._store = store

    def search(self, query: str, k: int = 6) -> list[dict[str, Any]]:
        """Return the top runbook chunks for ``query``, then the best product-doc chunks as further reading.

        A runbook says what to do, so it is cited first; the docs (how the product behaves) come after it.
        """
        self.warm()
        assert self._store is not None
        found = []
        for collection in self._roots:
            limit = k if collection == RUNBOOKS else max(1, k // 3)
            found += [{"document": f"{collection}/{h.source}", "heading": h.heading, "chunk_id": h.chunk_id,
                       "text": h.text} for h in self._store.search(collection, query[:1000], k=limit)]
        return found


def llm_answerer(settings: Settings) -> LlmAnswerer | None:
    """Return the LLM answerer when EDGELOOP_LLM_BASE_URL is set, else None (deterministic answers only)."""
    if not settings.llm_base_url:
        return None
    return LlmAnswerer(settings.llm_base_url, settings.llm_model or "default", settings.llm_api_key)


def _saver(settings: Settings) -> AbstractContextManager[BaseCheckpointSaver[Any]]:
    return open_checkpointer(checkpoint_url(settings))


def prepare_checkpointer(settings: Settings) -> None:
    """Create the checkpointer's tables (run at start-up, before any request holds a transaction)."""
    with _saver(settings):
        pass


def create_thread(*, settings: Settings, owner: str) -> ThreadRead:
    """Start a thread owned by ``owner``."""
    thread_id = uuid.uuid4().hex
    created = datetime.now(UTC)
    with _saver(settings) as saver:
        build_graph(saver).update_state(_config(thread_id), {"owner": owner, "created_at": created.isoformat(),
                                                              "turns": [], "context": {}}, as_node="answer")
    return ThreadRead(id=thread_id, owner=owner, created_at=created)


def get_thread(*, settings: Settings, thread_id: str, owner: str) -> ThreadRead:
    """Return a thread's history; another user's thread, like a missing one, is not found."""
    with _saver(settings) as saver:
        values = build_graph(saver).get_state(_config(thread_id)).values
    if not values or values.get("owner") != owner:
        raise NotFound("no such thread", thread_id=thread_id[:64])
    return ThreadRead(id=thread_id, owner=owner, created_at=values.get("created_at"), turns=values.get("turns", []))


def stream_answer(*, settings: Settings, runbooks: Runbooks, thread_id: str, question: str, token: str,
                  llm_answer: Any = None) -> Iterator[dict[str, str]]:
    """Answer ``question`` in the thread as SSE messages; a failure ends the stream with an error event."""
    api_url = settings.assistant_api_url or f"http://127.0.0.1:{settings.port}"
    try:
        with _saver(settings) as saver, ControlPlaneClient(api_url, token) as client:
            graph = build_graph(saver)
            config = _config(thread_id) | {"configurable": {
                "thread_id": thread_id, "client": client, "search_runbooks": runbooks.search,
                "max_tool_calls": settings.assistant_max_tool_calls, "llm_answer": llm_answer}}
            for event in graph.stream({"question": question}, config, stream_mode="custom"):
                yield _sse(event["event"], event["data"])
            turns = graph.get_state(_config(thread_id)).values.get("turns", [])
            yield _sse("message", turns[-1] if turns else {})
    except Exception as exc:  # the stream's boundary: any failure becomes an error event
        # The turn's checkpoint is only written when the node finishes, so the thread stays as it was.
        log.warning("assistant turn failed in thread %s: %s", thread_id[:64], type(exc).__name__)
        why = str(exc) if isinstance(exc, LlmError) else type(exc).__name__  # our own words, never a URL or token
        yield _sse("error", {"message": f"the answer failed part-way ({why}); the thread is unchanged, ask again"})


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def _sse(event: str, data: Any) -> dict[str, str]:
    return {"event": event, "data": json.dumps(data, default=str)}

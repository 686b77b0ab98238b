"""Assistant routes: create a thread, read its history, ask a question (answered as Server-Sent Events)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse
from starlette.concurrency import iterate_in_threadpool

from control_plane.assistant import service
from control_plane.assistant.schemas import MessageCreate, ThreadRead
from control_plane.constraints import Name
from control_plane.deps import Reader, SettingsDep

router = APIRouter(prefix="/assistant", tags=["assistant"])


def _runbooks(request: Request) -> service.Runbooks:
    state = request.app.state
    if getattr(state, "assistant_runbooks", None) is None:
        state.assistant_runbooks = service.Runbooks(state.settings.data_dir)
    runbooks: service.Runbooks = state.assistant_runbooks
    return runbooks


@router.post("/threads", status_code=status.HTTP_201_CREATED, response_model=ThreadRead)
async def create_thread(settings: SettingsDep, caller: Reader) -> ThreadRead:
    """Start a thread owned by the caller."""
    return await run_in_threadpool(lambda: service.create_thread(settings=settings, owner=caller.actor))


@router.get("/threads/{thread_id}", response_model=ThreadRead)
async def get_thread(thread_id: Name, settings: SettingsDep, caller: Reader) -> ThreadRead:
    """Return a thread's questions and answers (only to its owner)."""
    return await run_in_threadpool(
        lambda: service.get_thread(settings=settings, thread_id=thread_id, owner=caller.actor))


@router.post("/threads/{thread_id}/messages")
async def ask(thread_id: Name, body: MessageCreate, request: Request, settings: SettingsDep,
              caller: Reader) -> EventSourceResponse:
    """Answer a question as a stream: chunk, tool_start, tool_end, citations, then message (or error)."""
    await run_in_threadpool(lambda: service.get_thread(settings=settings, thread_id=thread_id, owner=caller.actor))
    token = request.headers["authorization"].split(" ", 1)[1].strip()
    events = service.stream_answer(settings=settings, runbooks=_runbooks(request), thread_id=thread_id,
                                   question=body.text, token=token, llm_answer=service.llm_answerer(settings))
    return EventSourceResponse(iterate_in_threadpool(events), ping=15)

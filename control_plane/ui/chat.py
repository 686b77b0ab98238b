"""The ops assistant's chat page: the same threads and answer stream as the assistant API, under the UI session."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response

from control_plane.assistant import service
from control_plane.assistant.routes import _runbooks
from control_plane.assistant.schemas import MessageCreate
from control_plane.constraints import Name
from control_plane.errors import Invalid, Unauthenticated
from control_plane.ui.auth import CheckedForm, CurrentViewer, get_codec
from control_plane.ui.rendering import redirect, render

router = APIRouter(prefix="/ui/chat", include_in_schema=False)


def _bearer(request: Request) -> str:
    session = get_codec(request).read(request)
    if session is None or session.token is None:
        raise Unauthenticated("sign in first")
    return session.token


@router.get("")
async def chat_page(request: Request, viewer: CurrentViewer,
                    thread: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-f]{1,64}$")] = None
                    ) -> Response:
    """Show a thread (a new one when none is named) with its questions, answers, tool calls and citations."""
    settings = request.app.state.settings
    owner = viewer.principal.actor
    if thread is None:
        created = await run_in_threadpool(lambda: service.create_thread(settings=settings, owner=owner))
        return redirect(f"/ui/chat?thread={created.id}")
    history = await run_in_threadpool(lambda: service.get_thread(settings=settings, thread_id=thread, owner=owner))
    return render(request, "chat.html", {"viewer": viewer, "title": "Assistant", "thread": history})


@router.post("/{thread_id}/messages")
async def ask(request: Request, thread_id: Name, viewer: CurrentViewer, form: CheckedForm) -> Response:
    """Answer in the thread: streamed as SSE to the page's script, or (without script) stored and redirected."""
    settings = request.app.state.settings
    owner = viewer.principal.actor
    try:
        question = MessageCreate(text=form.get("text", "")).text
    except ValueError as exc:
        raise Invalid("ask a question of 1 to 4,000 characters of text", field="text") from exc
    await run_in_threadpool(lambda: service.get_thread(settings=settings, thread_id=thread_id, owner=owner))
    events = service.stream_answer(settings=settings, runbooks=_runbooks(request), thread_id=thread_id,
                                   question=question, token=_bearer(request),
                                   llm_answer=service.llm_answerer(settings))
    if "text/event-stream" in request.headers.get("accept", ""):
        return EventSourceResponse(iterate_in_threadpool(events), ping=15, headers={"Cache-Control": "no-store"})
    await run_in_threadpool(lambda: [None for _ in events])  # no script: answer fully, then show the thread
    return redirect(f"/ui/chat?thread={thread_id}")

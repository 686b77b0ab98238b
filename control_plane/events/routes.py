"""The change stream (SSE over the audit log) and webhook subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from sqlalchemy import select
from sse_starlette import EventSourceResponse

from control_plane.constraints import Name
from control_plane.deps import Admin, Reader, SessionDep
from control_plane.errors import MAX_DB_INT, Invalid, ServiceUnavailable
from control_plane.events import service
from control_plane.events.hub import EventHub, stream_events
from control_plane.events.models import WebhookSubscription
from control_plane.events.schemas import (
    DeliveryRead,
    DeliveryState,
    EventHead,
    FilterList,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    check_filters,
)

router = APIRouter(tags=["events"])
# An event id: a non-negative audit seq of at most 18 digits (always within 64 bits).
CURSOR_PATTERN = r"^\s*(0|[1-9][0-9]{0,17})\s*$"
PING_SECONDS = 15


def _filters(values: list[str] | None, name: str) -> list[str]:
    try:
        return check_filters(values or [])
    except ValueError as exc:
        raise Invalid(str(exc), field=name) from exc


@router.get("/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}})
async def stream(
    request: Request, session: SessionDep, caller: Reader,
    resource_type: Annotated[FilterList | None, Query(description="exact, or a prefix ending in *")] = None,
    action: Annotated[FilterList | None, Query(description="exact, or a prefix ending in *")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40, pattern=CURSOR_PATTERN)] = None,
    after: Annotated[str | None, Query(max_length=40, pattern=CURSOR_PATTERN,
                                       description="Same as Last-Event-ID (0: the whole log)")] = None,
) -> EventSourceResponse:
    """Stream changes as Server-Sent Events; the id is the audit seq and Last-Event-ID resumes after it."""
    hub: EventHub | None = getattr(request.app.state, "event_hub", None)
    if hub is None:
        raise ServiceUnavailable("the event stream is not running")
    event_filter = service.EventFilter(caller.scopes, _filters(resource_type, "resource_type"),
                                       _filters(action, "action"))

    # The request's own session (one small indexed read, inline like authentication): a second pooled connection
    # per starting stream could exhaust the pool while every request holds its first.
    head = service.head_seq(session)
    cursor = service.parse_cursor(last_event_id if last_event_id is not None else after, head)
    cursor = head if cursor is None else cursor

    async def messages() -> AsyncIterator[bytes]:
        # One pre-encoded chunk per batch: sse-starlette sends bytes as they are.
        async for batch in stream_events(hub, event_filter, cursor):
            yield b"".join(event.sse_message() for event in batch)

    return EventSourceResponse(messages(), ping=PING_SECONDS, headers={"Cache-Control": "no-store",
                                                                       "X-Accel-Buffering": "no"})


@router.get("/events/head", response_model=EventHead)
def events_head(session: SessionDep, _: Reader) -> EventHead:
    """Return the newest event id: stream from it to see only what happens next."""
    return EventHead(head=service.head_seq(session))


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def create_webhook(body: WebhookCreate, session: SessionDep, caller: Admin) -> WebhookCreated:
    """Subscribe a URL to events; the signing secret is shown only in this response."""
    subscription = service.create_webhook(session=session, request=body, actor=caller.actor)
    return WebhookCreated.model_validate(subscription)


@router.get("/webhooks", response_model=list[WebhookRead])
def list_webhooks(session: SessionDep, _: Admin) -> list[WebhookRead]:
    """List subscriptions (no secrets)."""
    rows = session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.created_at))
    return [WebhookRead.model_validate(s) for s in rows]


@router.get("/webhooks/{webhook_id}", response_model=WebhookRead)
def get_webhook(webhook_id: Name, session: SessionDep, _: Admin) -> WebhookRead:
    """Return one subscription (no secret)."""
    return WebhookRead.model_validate(service.get_webhook(session=session, webhook_id=webhook_id))


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: Name, session: SessionDep, caller: Admin) -> Response:
    """Deactivate a subscription (its delivery history stays readable)."""
    service.delete_webhook(session=session, webhook_id=webhook_id, actor=caller.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryRead])
def list_deliveries(
    webhook_id: Name, session: SessionDep, _: Admin, state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryRead]:
    """List deliveries, newest first; state=dead is the dead-letter queue."""
    rows = service.list_deliveries(session=session, webhook_id=webhook_id, state=state, limit=limit)
    return [DeliveryRead.model_validate(d) for d in rows]


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", response_model=DeliveryRead)
def retry_delivery(webhook_id: Name, delivery_id: Annotated[int, Path(ge=1, le=MAX_DB_INT)], session: SessionDep,
                   caller: Admin) -> DeliveryRead:
    """Send a dead-lettered delivery again."""
    return DeliveryRead.model_validate(service.retry_delivery(session=session, webhook_id=webhook_id,
                                                              delivery_id=delivery_id, actor=caller.actor))

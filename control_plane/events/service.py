"""Read the audit log as events (filtered, role-limited, redacted) and manage webhook subscriptions."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, false, or_, select
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.audit.models import AuditEntry, AuditHead
from control_plane.auth.roles import Scope
from control_plane.constraints import INT64_MAX
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Invalid, NotFound
from control_plane.events.models import WebhookDelivery, WebhookSubscription
from control_plane.events.schemas import DeliveryState, Event, WebhookCreate
from control_plane.events.visibility import hidden_resource_types, redact

_ENTRIES = cast(Table, AuditEntry.__table__)
_CURSOR = re.compile(r"^\d{1,19}$")


def head_seq(session: Session) -> int:
    """Return the newest audit sequence number (0 for an empty log)."""
    return int(session.scalar(select(AuditHead.seq)) or 0)


def parse_cursor(raw: str | None, head: int) -> int | None:
    """Validate a Last-Event-ID: digits within the log; None when absent (start at the head)."""
    if raw is None:
        return None
    value = raw.strip()
    if not _CURSOR.match(value) or int(value) > INT64_MAX:
        raise Invalid("Last-Event-ID must be an event id (a non-negative audit sequence number)",
                      field="Last-Event-ID")
    cursor = int(value)
    if cursor > head:
        raise Conflict(f"Last-Event-ID {cursor} is beyond the newest event {head}; resubscribe without it",
                       head=head)
    return cursor


def _matches(column: Any, patterns: Sequence[str]) -> ColumnElement[bool]:
    exact = [p for p in patterns if not p.endswith("*")]
    clauses: list[ColumnElement[bool]] = [column.in_(exact)] if exact else []
    clauses += [column.startswith(p[:-1]) for p in patterns if p.endswith("*")]
    return or_(*clauses) if clauses else false()


class EventFilter:
    """Resource-type and action filters plus what the caller's role may not see; usable in SQL and in memory."""

    def __init__(self, scopes: frozenset[Scope], resource_types: Sequence[str] = (), actions: Sequence[str] = ()
                 ) -> None:
        self.resource_types, self.actions = list(resource_types), list(actions)
        self.hidden = frozenset(hidden_resource_types(scopes))

    def where(self) -> list[ColumnElement[bool]]:
        """Return SQL conditions on audit_entries."""
        conditions: list[ColumnElement[bool]] = []
        if self.hidden:
            conditions.append(_ENTRIES.c.resource_type.not_in(sorted(self.hidden)))
        if self.resource_types:
            conditions.append(_matches(_ENTRIES.c.resource_type, self.resource_types))
        if self.actions:
            conditions.append(_matches(_ENTRIES.c.action, self.actions))
        return conditions

    def accepts(self, event: Event) -> bool:
        """Apply the same filter to an event already read."""
        if event.resource_type in self.hidden:
            return False
        return _accepts(event.resource_type, self.resource_types) and _accepts(event.action, self.actions)


def _accepts(value: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(value.startswith(p[:-1]) if p.endswith("*") else value == p for p in patterns)


def event_from_row(seq: int, body: str) -> Event:
    """Build a redacted event from an entry's hashed body."""
    entry = json.loads(body)
    return Event(seq=seq, ts=entry["ts"], actor=entry["actor"], action=entry["action"],
                 resource_type=entry["resource"]["type"], resource_id=entry["resource"]["id"],
                 data=redact(entry["data"]))


def read_events(session: Session, *, after: int, limit: int, event_filter: EventFilter | None = None,
                until: int | None = None) -> list[Event]:
    """Return events after ``after`` (up to ``until``) in order, filtered in SQL."""
    query = select(_ENTRIES.c.seq, _ENTRIES.c.body).where(_ENTRIES.c.seq > after)
    if until is not None:
        query = query.where(_ENTRIES.c.seq <= until)
    if event_filter is not None:
        query = query.where(*event_filter.where())
    rows = session.execute(query.order_by(_ENTRIES.c.seq).limit(limit))
    return [event_from_row(seq, body) for seq, body in rows]


# ------------------------------------------------------------------ webhook subscriptions


def create_webhook(*, session: Session, request: WebhookCreate, actor: str) -> WebhookSubscription:
    """Subscribe a URL; the secret is generated here and returned once (never audited)."""
    subscription = WebhookSubscription(url=request.url, secret=secrets.token_urlsafe(32),
                                       resource_types=request.resource_types, actions=request.actions, active=True,
                                       cursor=0 if request.from_beginning else head_seq(session), created_by=actor,
                                       updated_at=utcnow())
    session.add(subscription)
    session.flush()
    audit.record(session, actor=actor, action="webhook.create", resource=("webhook", subscription.id),
                 data={"url": subscription.url, "resource_types": subscription.resource_types,
                       "actions": subscription.actions, "cursor": subscription.cursor})
    return subscription


def get_webhook(*, session: Session, webhook_id: str) -> WebhookSubscription:
    """Return a subscription or raise NotFound."""
    subscription = session.get(WebhookSubscription, webhook_id)
    if subscription is None:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return subscription


def delete_webhook(*, session: Session, webhook_id: str, actor: str) -> None:
    """Stop a subscription: it is deactivated, its delivery history kept."""
    subscription = get_webhook(session=session, webhook_id=webhook_id)
    subscription.active, subscription.updated_at = False, utcnow()
    audit.record(session, actor=actor, action="webhook.delete", resource=("webhook", webhook_id), data={})


def list_deliveries(*, session: Session, webhook_id: str, state: DeliveryState | None, limit: int
                    ) -> list[WebhookDelivery]:
    """Return a subscription's deliveries, newest first (state=dead is the dead-letter queue)."""
    get_webhook(session=session, webhook_id=webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id)
    if state is not None:
        query = query.where(WebhookDelivery.state == state.value)
    return list(session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))


def retry_delivery(*, session: Session, webhook_id: str, delivery_id: int, actor: str) -> WebhookDelivery:
    """Send a dead-lettered delivery again from a fresh attempt count."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.subscription_id != webhook_id:
        raise NotFound(f"delivery {delivery_id} of webhook {webhook_id!r} not found")
    if delivery.state != DeliveryState.DEAD:
        raise Conflict(f"delivery {delivery_id} is {delivery.state}; only a dead one can be retried")
    delivery.state, delivery.attempts, delivery.next_attempt_at = DeliveryState.PENDING.value, 0, utcnow()
    audit.record(session, actor=actor, action="webhook.redeliver", resource=("webhook", webhook_id),
                 data={"delivery_id": delivery_id, "event_seq": delivery.event_seq})
    session.flush()
    return delivery


def subscription_filter(subscription: WebhookSubscription) -> EventFilter:
    """A webhook sees what an admin sees, narrowed by its filters."""
    return EventFilter(frozenset(Scope), subscription.resource_types, subscription.actions)


def event_payload(event: Event) -> dict[str, Any]:
    """Return the JSON an SSE message or a webhook body carries for an event."""
    return event.model_dump(mode="json")

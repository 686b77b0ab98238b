"""Event and webhook bodies: an event is an audit entry as a reader may see it (hashes and secrets left out)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from sse_starlette import ServerSentEvent

FILTER_PATTERN = r"^[a-z0-9_.]{1,100}\*?$"
_FILTER = re.compile(FILTER_PATTERN)
# ASCII host names, IPv4 or a bracketed IPv6 literal; httpx re-checks (port range, IPv6 syntax) when creating.
URL_PATTERN = (r"^https?://([A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?"
               r"(/[!-~]*)?$")


class StrictModel(BaseModel):
    """Rejects unknown fields so a typo is a 422, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class Event(BaseModel):
    """One change: the audit entry's sequence number is the event id."""

    seq: int
    ts: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    data: dict[str, Any]
    _sse: bytes | None = PrivateAttr(default=None)

    def sse_message(self) -> bytes:
        """Return this event as one SSE message (id = seq), encoded once however many streams send it."""
        # The hub hands the same Event objects to every live stream and the bytes do not depend on the reader
        # (hidden types are filtered, redaction is the same for all), so N subscribers cost one encoding.
        if self._sse is None:
            self._sse = ServerSentEvent(id=str(self.seq), data=self.model_dump_json()).encode()
        return self._sse


class EventHead(BaseModel):
    """The newest event id."""

    head: int


def check_filters(values: list[str]) -> list[str]:
    """Accept exact names or a trailing-* prefix (``incident.*``)."""
    for value in values:
        if not _FILTER.match(value):
            raise ValueError(f"bad filter {value[:50]!r}: lowercase letters, digits, '_' and '.', optional trailing *")
    return values


FilterList = Annotated[list[Annotated[str, Field(max_length=120, pattern=FILTER_PATTERN)]], Field(max_length=50)]


class DeliveryState(StrEnum):
    """pending (with its next attempt) -> delivered | dead."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class WebhookCreate(StrictModel):
    """Subscribe a URL to the events matching these filters (empty: every event)."""

    url: Annotated[str, Field(min_length=8, max_length=2000, pattern=URL_PATTERN)]
    resource_types: FilterList = Field(default_factory=list)
    actions: FilterList = Field(default_factory=list)
    from_beginning: bool = Field(default=False, description="Deliver the whole log, not only events from now.")

    @field_validator("url")
    @classmethod
    def _parsable(cls, url: str) -> str:
        import httpx

        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a usable URL: {exc}") from exc
        return url


class WebhookRead(BaseModel):
    """A subscription; its secret is never shown again after creation."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    resource_types: list[str]
    actions: list[str]
    active: bool
    cursor: int
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookRead):
    """A new subscription with its signing secret, shown exactly once."""

    secret: str


class DeliveryRead(BaseModel):
    """One event's delivery to one subscription."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    subscription_id: str
    event_seq: int
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime

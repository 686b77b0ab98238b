"""Typed client for incidents, proposals and the change stream, for the agents and the UI.

Requests and responses are the control plane's own pydantic schemas, so a field the server would refuse is
refused here first, and every response is validated. ``events()`` follows the SSE stream and, when the
connection drops, reconnects with Last-Event-ID: no event is lost or repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import httpx
from httpx_sse import connect_sse
from pydantic import BaseModel, TypeAdapter

from control_plane.approvals.schemas import (
    Decision,
    ProposalCreate,
    ProposalPage,
    ProposalRead,
    ProposalState,
    VerificationCreate,
)
from control_plane.events.schemas import Event
from control_plane.fleet.schemas import ShadowReportRead
from control_plane.incidents.schemas import (
    Comment,
    IncidentPage,
    IncidentRead,
    IncidentState,
    IncidentTransition,
    RcaReport,
    TimelineEntryRead,
    TriageNote,
)

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)
_TIMELINE = TypeAdapter(list[TimelineEntryRead])
FINAL_PROPOSAL_STATES = frozenset({ProposalState.REJECTED, ProposalState.EXPIRED, ProposalState.EXECUTED,
                                   ProposalState.FAILED})


class ControlPlaneError(RuntimeError):
    """The control plane refused a request; ``code`` and ``details`` come from its error body."""

    def __init__(self, status_code: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code, self.code, self.message, self.details = status_code, code, message, details


class ControlPlaneClient:
    """Incidents, proposals and events over HTTP with one bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout_seconds: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api/v1", timeout=timeout_seconds,
                                  transport=transport, headers={"Authorization": f"Bearer {token}"})
        self.last_event_id: int | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, body: BaseModel | None = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["content"] = body.model_dump_json(exclude_unset=False)
            kwargs["headers"] = {"Content-Type": "application/json"}
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    # ------------------------------------------------------------ incidents

    def list_incidents(self, *, state: Iterable[IncidentState] = (), model: str | None = None,
                       limit: int = 100) -> IncidentPage:
        """List incidents, most recently active first."""
        params: dict[str, Any] = {"state": [s.value for s in state], "limit": limit}
        if model:
            params["model"] = model
        return IncidentPage.model_validate(self._call("GET", "/incidents", params=params))

    def get_incident(self, incident_id: str) -> IncidentRead:
        """Return one incident."""
        return IncidentRead.model_validate(self._call("GET", f"/incidents/{incident_id}"))

    def move_incident(self, incident_id: str, state: IncidentState, reason: str = "") -> IncidentRead:
        """Move an incident (needs the write scope)."""
        body = IncidentTransition(state=state, reason=reason)
        return IncidentRead.model_validate(self._call("POST", f"/incidents/{incident_id}/state", body=body))

    def timeline(self, incident_id: str, after_id: int = 0) -> list[TimelineEntryRead]:
        """Return an incident's timeline in order."""
        return _TIMELINE.validate_python(self._call("GET", f"/incidents/{incident_id}/timeline",
                                                    params={"after_id": after_id}))

    def post(self, incident_id: str, entry: TriageNote | RcaReport | Comment) -> TimelineEntryRead:
        """Add a triage note, RCA report or comment to an incident's timeline."""
        return TimelineEntryRead.model_validate(self._call("POST", f"/incidents/{incident_id}/timeline", body=entry))

    # ------------------------------------------------------------ proposals

    def propose(self, request: ProposalCreate) -> ProposalRead:
        """Create a proposal (the same idempotency key returns the existing one)."""
        return ProposalRead.model_validate(self._call("POST", "/proposals", body=request))

    def get_proposal(self, proposal_id: str) -> ProposalRead:
        """Return one proposal."""
        return ProposalRead.model_validate(self._call("GET", f"/proposals/{proposal_id}"))

    def list_proposals(self, *, state: Iterable[ProposalState] = (), incident_id: str | None = None,
                       limit: int = 100) -> ProposalPage:
        """List proposals, newest first (``state=[PENDING]`` is the approval queue)."""
        params: dict[str, Any] = {"state": [s.value for s in state], "limit": limit}
        if incident_id:
            params["incident_id"] = incident_id
        return ProposalPage.model_validate(self._call("GET", "/proposals", params=params))

    def approve(self, proposal_id: str, reason: str) -> ProposalRead:
        """Approve (approver or admin, never the proposer)."""
        return ProposalRead.model_validate(self._call("POST", f"/proposals/{proposal_id}/approve",
                                                      body=Decision(reason=reason)))

    def reject(self, proposal_id: str, reason: str) -> ProposalRead:
        """Reject with a reason."""
        return ProposalRead.model_validate(self._call("POST", f"/proposals/{proposal_id}/reject",
                                                      body=Decision(reason=reason)))

    def verify(self, proposal_id: str, verification: VerificationCreate) -> ProposalRead:
        """Record whether an executed action helped."""
        return ProposalRead.model_validate(self._call("POST", f"/proposals/{proposal_id}/verification",
                                                      body=verification))

    def wait_for_proposal(self, proposal_id: str, states: Iterable[ProposalState] = FINAL_PROPOSAL_STATES,
                          timeout_seconds: float = 60.0) -> ProposalRead:
        """Block until the proposal reaches one of ``states``, woken by the change stream rather than polling."""
        wanted = frozenset(states)
        cursor = self.head()
        current = self.get_proposal(proposal_id)
        deadline = time.monotonic() + timeout_seconds
        while current.state not in wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"proposal {proposal_id} is still {current.state} after {timeout_seconds}s")
            try:
                # A short read timeout bounds the wait even when the stream only carries keep-alive pings.
                for event in self.events(after=cursor, resource_types=["proposal"],
                                         read_timeout=min(remaining, 5.0)):
                    cursor = event.seq
                    if event.resource_id == proposal_id:
                        break
            except httpx.ReadTimeout:
                pass
            current = self.get_proposal(proposal_id)
        return current

    # ------------------------------------------------------------ events

    def head(self) -> int:
        """Return the newest event id (the cursor to stream from "now")."""
        return int(self._call("GET", "/events/head")["head"])

    def events(self, *, after: int | None = None, resource_types: Iterable[str] = (), actions: Iterable[str] = (),
               read_timeout: float = 60.0, reconnect: bool = True, max_reconnects: int = 100) -> Iterator[Event]:
        """Yield changes in order, from ``after`` (or from now); reconnect with Last-Event-ID when cut off."""
        cursor = after
        params = {"resource_type": list(resource_types), "action": list(actions)}
        reconnects = 0
        while True:
            headers = {"Last-Event-ID": str(cursor)} if cursor is not None else {}
            try:
                with connect_sse(self._http, "GET", "/events", params=params, headers=headers,
                                 timeout=httpx.Timeout(self._http.timeout.connect, read=read_timeout)) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise _error(source.response)
                    for message in source.iter_sse():
                        if not message.data:  # the server's keep-alive ping (an SSE comment): no event
                            continue
                        event = Event.model_validate_json(message.data)
                        cursor = self.last_event_id = event.seq
                        yield event
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                if not reconnect or reconnects >= max_reconnects or isinstance(exc, httpx.ReadTimeout):
                    raise
                reconnects += 1
                log.info("event stream cut off (%s); resuming after %s", type(exc).__name__, cursor)
                time.sleep(min(5.0, 0.1 * 2 ** min(reconnects, 6)))

    # ------------------------------------------------------------ read-only access for the agents' tools

    def read_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET any read endpoint under /api/v1 and return its JSON (the tools validate what they use)."""
        if not path.startswith("/") or ".." in path:
            raise ValueError(f"not an API path: {path!r}")
        return self._call("GET", path, params=params or {})

    def shadow_report(self, rollout_id: str) -> ShadowReportRead:
        """Return a shadow rollout's (or its canary's) candidate-vs-active comparison per cohort, validated."""
        return ShadowReportRead.model_validate(self._call("GET", f"/fleet/rollouts/{rollout_id}/shadow"))

    def record_agent_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record an agent run (prompt versions, model, tools used); needs the propose scope."""
        result: dict[str, Any] = self._call("POST", "/agent-runs", json=body)
        return result


def _error(response: httpx.Response) -> ControlPlaneError:
    try:
        error = response.json()["error"]
        return ControlPlaneError(response.status_code, error["code"], error["message"], error.get("details", {}))
    except (ValueError, KeyError, TypeError):
        return ControlPlaneError(response.status_code, "http_error", response.text[:500], {})

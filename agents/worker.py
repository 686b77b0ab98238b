"""The agents' worker: follow the change stream, run triage -> RCA -> remediation, resume after execution.

The cursor (last handled event id) is persisted after each event, and every graph thread id is derived from
the event or incident, so a restart neither misses an event nor runs a graph twice for one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.rca.graph import build_graph as build_rca
from agents.remediation.graph import build_graph as build_remediation
from agents.triage.graph import build_graph as build_triage
from control_plane.approvals.schemas import ProposalRead, ProposalState
from control_plane.events.schemas import Event

log = logging.getLogger(__name__)
PROPOSAL_MOVES = frozenset({"proposal.executed", "proposal.rejected", "proposal.expired", "proposal.failed"})
# A proposal refused because the world moved under it (or left to expire) is re-planned from fresh evidence, at
# most this many times per incident: a remedy that still applies is proposed again, never in a storm.
MAX_REPROPOSALS = 2
STALE_PREFIX = "stale"


class Cursor:
    """The last handled event id and the remediations waiting for telemetry, in a JSON file replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.waiting: set[str] = set()

    def load(self) -> int | None:
        """Return the saved event id (None on a first start) and restore the waiting set."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        self.waiting = set(saved.get("waiting_verification", []))
        return int(saved["last_event_id"]) if saved.get("last_event_id") is not None else None

    def save(self, event_id: int | None) -> None:
        """Persist ``event_id`` and the waiting set (write, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump({"last_event_id": event_id, "waiting_verification": sorted(self.waiting)}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)


class AgentWorker:
    """Turn events into graph runs."""

    def __init__(self, client: ControlPlaneClient, checkpointer: BaseCheckpointSaver[Any], llm: LlmClient | None,
                 cursor: Cursor, **options: Any) -> None:
        self.client = client
        self.cursor = cursor
        self.triage = build_triage(checkpointer, client, llm, **options)
        self.rca = build_rca(checkpointer, client, llm, **options)
        self.remediation = build_remediation(checkpointer, client, llm, **options)
        self.handled = 0
        self.rca_passes = 0
        self.coalesced = 0
        # Alert checks each incident's pending proposal already accounts for: another alert of the same check
        # (one per drifted feature: 60 on the demo) joins the evidence of the next pass instead of costing one.
        self.analysed: dict[str, set[str]] = {}
        self._stop = threading.Event()

    def run(self, stop: threading.Event, *, start_at_head: bool = False, read_timeout: float = 2.0,
            verify_every: float = 5.0) -> None:
        """Follow the stream until ``stop`` is set; on a first start begin at the head or at the beginning."""
        self._stop = stop
        after = self.cursor.load()
        if after is None:
            after = self.client.head() if start_at_head else 0
        polled = time.monotonic()
        while not stop.is_set():
            try:
                for event in self.client.events(after=after, resource_types=["incident", "proposal"],
                                                read_timeout=read_timeout):
                    handled = self.handle(event)
                    if stop.is_set() and handled is False:
                        return  # cut off by the shutdown: the next start handles this event again
                    self.cursor.save(event.seq)
                    after = event.seq
                    if stop.is_set():
                        return
                    # A busy stream (one alert per drifted feature: 60 on the demo) must not hold back the
                    # verification of an executed rollback, nor its "executed" event queued behind the alerts.
                    if time.monotonic() - polled >= verify_every:
                        self.poll_executed()
                        self.poll_verifications()
                        polled = time.monotonic()
            except httpx.ReadTimeout:
                self.poll_verifications()
                polled = time.monotonic()
                self.cursor.save(after)
                continue
            except httpx.TransportError as exc:
                if stop.is_set():
                    return
                log.warning("event stream unavailable (%s); retrying", type(exc).__name__)
                stop.wait(1.0)

    def handle(self, event: Event) -> bool:
        """Run what one event calls for; a failing graph is logged and does not stop the worker."""
        try:
            if event.action == "incident.alert_joined" and event.data.get("alert_id"):
                self.on_alert(str(event.data["alert_id"]), event.resource_id, event.seq,
                              str(event.data["check"]) if event.data.get("check") else None)
            elif event.action in PROPOSAL_MOVES:
                self.on_proposal(event.resource_id)
        except Exception:  # one bad event must not stop the stream; the graph's checkpoint keeps its progress
            if self._stop.is_set():  # the API is going away with us: no failure, the event is retried
                log.info("agents: event %s (%s) cut off by the shutdown", event.seq, event.action)
                return False
            log.exception("agents: handling event %s (%s) failed", event.seq, event.action)
        self.handled += 1
        return True

    def on_alert(self, alert_id: str, incident_id: str, seq: int, check: str | None = None) -> None:
        """Triage the alert; investigate and remediate when triage says so (or coalesce it into a pending one)."""
        thread = {"configurable": {"thread_id": f"remediation:{incident_id}"}}
        check = check or str(self.client.read_json(f"/alerts/{alert_id}").get("check"))
        analysed = self.analysed.setdefault(incident_id, set())
        if check in analysed and self.remediation.get_state(thread).next:
            # The proposal waiting for a person already answers this kind of alert; the next pass (another
            # check, or a re-plan after the proposal closes) reads this alert with the incident's others.
            self.coalesced += 1
            log.info("incident %s: %s alert %s coalesced into the pending proposal", incident_id, check, alert_id)
            return
        triage = _run_once(self.triage, f"triage:{alert_id}:{seq}", {"alert_id": alert_id})
        if triage.get("decision") != "investigate":
            return
        rca = _run_once(self.rca, f"rca:{incident_id}:{seq}", {"incident_id": incident_id})
        self.rca_passes += 1
        analysed.add(check)
        if self.remediation.get_state(thread).next:
            log.info("incident %s already has a remediation waiting for approval", incident_id)
            return
        self.remediation.invoke({"incident_id": incident_id, "findings": rca["findings"]}, thread)

    def on_proposal(self, proposal_id: str) -> None:
        """Resume the remediation waiting on this proposal; re-plan one refused as stale or left to expire."""
        proposal = self.client.get_proposal(proposal_id)
        self._resume_waiting(proposal)
        if proposal.incident_id is None or not _went_stale(proposal):
            return
        thread = {"configurable": {"thread_id": f"remediation:{proposal.incident_id}"}}
        state = self.remediation.get_state(thread)
        attempt = int(state.values.get("attempt", 0)) + 1
        if state.next or state.values.get("proposal_id") != proposal.id or attempt > MAX_REPROPOSALS:
            return  # another proposal is open, this one was superseded, or the bound is reached
        rca = _run_once(self.rca, f"rca:{proposal.incident_id}:after:{proposal.id}",
                        {"incident_id": proposal.incident_id})
        self.rca_passes += 1
        log.info("proposal %s went stale (%s); re-planning incident %s (attempt %d)", proposal.id,
                 proposal.state.value, proposal.incident_id, attempt)
        self.remediation.invoke({"incident_id": proposal.incident_id, "findings": rca["findings"],
                                 "attempt": attempt}, thread)

    def poll_executed(self) -> None:
        """Resume remediations whose proposal executed while its event still queues behind a burst of alerts."""
        for proposal in self.client.list_proposals(state=[ProposalState.EXECUTED], limit=20).items:
            self._resume_waiting(proposal)

    def _resume_waiting(self, proposal: ProposalRead) -> None:
        if proposal.incident_id is None:
            return
        thread = {"configurable": {"thread_id": f"remediation:{proposal.incident_id}"}}
        state = self.remediation.get_state(thread)
        if state.next and state.values.get("proposal_id") == proposal.id and "await_execution" in state.next:
            self._resume(thread)

    def poll_verifications(self) -> None:
        """Resume remediations waiting for fresh windows (called when the stream is idle)."""
        for thread_id in sorted(self.cursor.waiting):
            try:
                self._resume({"configurable": {"thread_id": thread_id}})
            except Exception:  # keep polling the others; this one stays waiting
                if self._stop.is_set():
                    return
                log.exception("agents: verification of %s failed", thread_id)

    def _resume(self, thread: dict[str, Any]) -> None:
        thread_id = thread["configurable"]["thread_id"]
        self.remediation.invoke(Command(resume=True), thread)
        if "await_telemetry" in self.remediation.get_state(thread).next:
            self.cursor.waiting.add(thread_id)
        else:
            self.cursor.waiting.discard(thread_id)


def _went_stale(proposal: ProposalRead) -> bool:
    """True when the proposal closed because the world changed under it (or nobody decided in time)."""
    if proposal.state == ProposalState.EXPIRED:
        return True
    reason = (proposal.decision_reason if proposal.state == ProposalState.REJECTED
              else proposal.error if proposal.state == ProposalState.FAILED else None)
    return bool(reason) and STALE_PREFIX in str(reason).lower()


def _run_once(graph: Any, thread_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run a thread to the end once: finish it if it was cut off, return its result if it already ran."""
    config = {"configurable": {"thread_id": thread_id}}
    state = graph.get_state(config)
    if state.values and not state.next:
        return dict(state.values)
    result: dict[str, Any] = graph.invoke(None if state.next else payload, config)
    return result

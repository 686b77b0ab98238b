"""Scrape-time collectors: this process's ingest and broker state, and the database's domain state (cached)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.alerts.models import Alert
from control_plane.approvals.models import Proposal
from control_plane.db.session import Database
from control_plane.drift.models import MonitorState
from control_plane.events.models import WebhookDelivery
from control_plane.fleet.models import Manifest, Rollout
from control_plane.incidents.models import Incident
from control_plane.prompts.models import AgentRun
from control_plane.telemetry.models import QuarantinedMessage

log = logging.getLogger(__name__)
MAX_LABEL_VALUES = 50  # per label of a database metric; the rest are summed under "other"
RECENT_ROWS = 1000  # decided proposals and agent runs behind the latency quantiles
QUANTILES = (0.5, 0.9, 0.99)


def _bounded(counts: Iterable[tuple[tuple[str, ...], float]]) -> dict[tuple[str, ...], float]:
    """Keep the most common label values per position; fold the rest into "other" (free-text columns stay bounded)."""
    rows = [(tuple("" if v is None else str(v)[:64] for v in labels), value) for labels, value in counts]
    if not rows:
        return {}
    width = len(rows[0][0])
    keep: list[set[str]] = []
    for position in range(width):
        totals: dict[str, float] = {}
        for labels, value in rows:
            totals[labels[position]] = totals.get(labels[position], 0.0) + value
        keep.append(set(sorted(totals, key=lambda name: (-totals[name], name))[:MAX_LABEL_VALUES]))
    folded: dict[tuple[str, ...], float] = {}
    for labels, value in rows:
        key = tuple(v if v in keep[i] else "other" for i, v in enumerate(labels))
        folded[key] = folded.get(key, 0.0) + value
    return folded


def _gauge(name: str, documentation: str, labels: list[str], counts: Iterable[tuple[tuple[str, ...], float]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in _bounded(counts).items():
        family.add_metric(list(values), value)
    return family


def _quantiles(name: str, documentation: str, by_label: str, samples: dict[str, list[float]]) -> Iterator[Metric]:
    values = GaugeMetricFamily(name, documentation, labels=[by_label, "quantile"])
    count = GaugeMetricFamily(f"{name}_samples", f"Rows behind {name} (at most {RECENT_ROWS}).", labels=[by_label])
    for key, seconds in sorted(samples.items())[:MAX_LABEL_VALUES]:
        ordered = sorted(seconds)
        for q in QUANTILES:
            values.add_metric([key, str(q)], ordered[min(len(ordered) - 1, int(q * len(ordered)))])
        count.add_metric([key], len(ordered))
    yield values
    yield count


def _state_counts(session: Session, *columns: Any, where: Any = None) -> list[tuple[tuple[str, ...], float]]:
    query = select(*columns, func.count()).group_by(*columns)
    rows = session.execute(query if where is None else query.where(where))
    return [(tuple(row[:-1]), float(row[-1])) for row in rows]


def _duration(details: Any) -> float | None:
    value = details.get("duration_seconds") if isinstance(details, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e9:
        return float(value)
    return None


def database_metrics(session: Session) -> list[Metric]:
    """Read the domain state every replica shares: one GROUP BY per table on indexed state columns."""
    metrics = [
        _gauge("edgeloop_rollouts", "Rollouts by state.", ["state"], _state_counts(session, Rollout.state)),
        _gauge("edgeloop_alerts", "Alerts by state and severity.", ["state", "severity"],
               _state_counts(session, Alert.state, Alert.severity)),
        _gauge("edgeloop_incidents", "Incidents by state.", ["state"], _state_counts(session, Incident.state)),
        _gauge("edgeloop_proposals", "Proposals by state and kind.", ["state", "kind"],
               _state_counts(session, Proposal.state, Proposal.kind)),
        _gauge("edgeloop_drift_findings_active", "Drift monitor checks currently raised, by check.", ["check"],
               _state_counts(session, MonitorState.check, where=MonitorState.active.is_(True))),
        _gauge("edgeloop_agent_runs", "Agent runs recorded, by agent and outcome.", ["agent", "outcome"],
               _state_counts(session, AgentRun.agent, AgentRun.outcome)),
        _gauge("edgeloop_telemetry_quarantine_rows", "Quarantined telemetry messages kept, by reason.", ["reason"],
               _state_counts(session, QuarantinedMessage.reason)),
        # Queues: deliveries waiting per state, manifests not yet published to their devices.
        _gauge("edgeloop_webhook_deliveries", "Webhook deliveries by state.", ["state"],
               _state_counts(session, WebhookDelivery.state)),
        _gauge("edgeloop_manifests_unpublished", "Signed manifests not yet published to the broker.", [],
               [((), float(session.scalar(select(func.count()).where(Manifest.published_at.is_(None))) or 0))]),
    ]
    decided = session.execute(select(Proposal.state, Proposal.created_at, Proposal.decided_at)
                              .where(Proposal.decided_at.is_not(None))
                              .order_by(Proposal.decided_at.desc()).limit(RECENT_ROWS))
    latency: dict[str, list[float]] = {}
    for state, created_at, decided_at in decided:
        if decided_at is None:
            continue
        latency.setdefault(str(state), []).append(max(0.0, (decided_at - created_at).total_seconds()))
    metrics += _quantiles("edgeloop_approval_latency_seconds",
                          "Proposal creation to decision, over the newest decided proposals.", "decision", latency)
    executed = session.execute(select(Proposal.kind, Proposal.decided_at, Proposal.executed_at)
                               .where(Proposal.executed_at.is_not(None), Proposal.decided_at.is_not(None))
                               .order_by(Proposal.executed_at.desc()).limit(RECENT_ROWS))
    execution: dict[str, list[float]] = {}
    for kind, decided_at, executed_at in executed:
        if decided_at is None or executed_at is None:
            continue
        execution.setdefault(str(kind), []).append(max(0.0, (executed_at - decided_at).total_seconds()))
    # The other half of "approval latency": how long an approved action waits for, and takes in, its executor.
    metrics += _quantiles("edgeloop_approval_execution_latency_seconds",
                          "Approval decision to execution finished, over the newest executed proposals.", "kind",
                          execution)
    runs = session.execute(select(AgentRun.agent, AgentRun.details).order_by(AgentRun.created_at.desc())
                           .limit(RECENT_ROWS))
    durations: dict[str, list[float]] = {}
    for agent, details in runs:
        seconds = _duration(details)
        if seconds is not None:
            durations.setdefault(str(agent), []).append(seconds)
    metrics += _quantiles("edgeloop_agent_run_duration_seconds",
                          "Agent run durations (details.duration_seconds), over the newest runs.", "agent", durations)
    return metrics


class DatabaseCollector(Collector):
    """Domain state from the database, re-read at most every ``cache_seconds`` (N replicas, one scrape each)."""

    def __init__(self, database: Database, cache_seconds: float) -> None:
        self.database = database
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at = float("-inf")
        self._failures = 0
        self._took = 0.0

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # concurrent scrapes wait for one read instead of each running every query
            if time.monotonic() - self._read_at >= self.cache_seconds:
                started = time.perf_counter()
                try:
                    with self.database.transaction(write=False) as session:
                        self._cached = database_metrics(session)
                except Exception:
                    # A failing database must not take the process metrics down with it; the counter says so.
                    log.warning("database metrics unavailable", exc_info=True)
                    self._failures += 1
                    self._cached = []
                self._read_at = time.monotonic()
                self._took = time.perf_counter() - started
            cached, failures, took = list(self._cached), self._failures, self._took
        yield from cached
        yield CounterMetricFamily("edgeloop_metrics_database_failures", "Scrapes whose database read failed.",
                                  value=failures)
        yield GaugeMetricFamily("edgeloop_metrics_database_read_seconds", "Time the last database read took.",
                                value=took)


class ProcessCollector(Collector):
    """State only this process knows: ingest counters, broker connections, in-memory queues, drift passes."""

    def __init__(self, state: Any) -> None:
        self.state = state  # the app's state; workers attach to it when the lifespan starts

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily("edgeloop_telemetry_windows_received", "Telemetry messages received.",
                                       labels=["source"])
        stored = CounterMetricFamily("edgeloop_telemetry_windows_stored", "Telemetry windows stored.",
                                     labels=["source"])
        duplicates = CounterMetricFamily("edgeloop_telemetry_windows_duplicate", "Duplicate windows dropped.",
                                         labels=["source"])
        quarantined = CounterMetricFamily("edgeloop_telemetry_windows_quarantined",
                                          "Telemetry messages quarantined, by reason.", labels=["source", "reason"])
        connected = GaugeMetricFamily("edgeloop_mqtt_connected", "1 while this client is connected to the broker.",
                                      labels=["client"])
        connects = CounterMetricFamily("edgeloop_mqtt_connects", "Successful broker connections (rising fast: a"
                                       " flapping link or two clients sharing one client id).", labels=["client"])
        depth = GaugeMetricFamily("edgeloop_telemetry_inbox_depth", "Messages received but not yet written.",
                                  labels=["consumer"])
        sources = [(c.name, c.totals) for c in getattr(self.state, "telemetry_consumers", None) or []]
        http_ingestor = getattr(self.state, "telemetry_ingestor", None)
        if http_ingestor is not None:
            sources.append(("http", http_ingestor.totals))
        for source, totals in sources:
            received.add_metric([source], totals.received)
            stored.add_metric([source], totals.stored)
            duplicates.add_metric([source], totals.duplicates)
            for reason, count in sorted(totals.quarantined.items())[:MAX_LABEL_VALUES]:
                quarantined.add_metric([source, reason], count)
        for consumer in getattr(self.state, "telemetry_consumers", None) or []:
            connected.add_metric([consumer.name], float(consumer.connection.connected.is_set()))
            connects.add_metric([consumer.name], getattr(consumer.connection, "connect_count", 0))
            # The consumer's hand-off deque (paho thread -> batcher); read, never locked: len() is atomic.
            inbox = getattr(getattr(consumer, "_inbox", None), "_items", None)
            if inbox is not None:
                depth.add_metric([consumer.name], len(inbox))
        bridge = getattr(self.state, "fleet_bridge", None)
        if bridge is not None:
            connected.add_metric(["fleet-bridge"], float(bridge.connection.connected.is_set()))
            connects.add_metric(["fleet-bridge"], getattr(bridge.connection, "connect_count", 0))
        yield from (received, stored, duplicates, quarantined, connected, connects, depth)
        scheduler = getattr(self.state, "drift_scheduler", None)
        checks = CounterMetricFamily("edgeloop_drift_checks_run", "Drift checks evaluated by this process.",
                                     labels=["pass"])
        for kind, count in sorted(getattr(scheduler, "checks_run", {}).items()):
            checks.add_metric([kind], count)
        yield checks
        hub = getattr(self.state, "event_hub", None)
        subscribers = GaugeMetricFamily("edgeloop_event_stream_subscribers",
                                        "Open SSE streams (API and UI) served by this process.")
        backlog = GaugeMetricFamily("edgeloop_event_stream_queue_depth_max",
                                    "Largest number of undelivered event batches queued for one stream.")
        lagging = GaugeMetricFamily("edgeloop_event_stream_lagging",
                                    "Streams whose queue overflowed and that are catching up from the database.")
        streams = list(getattr(hub, "subscribers", ()))
        subscribers.add_metric([], len(streams))
        backlog.add_metric([], max((s.queue.qsize() for s in streams), default=0))
        lagging.add_metric([], sum(1 for s in streams if s.lagged))
        yield from (subscribers, backlog, lagging)

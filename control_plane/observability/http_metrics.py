"""Per-app HTTP metrics: request latency histograms per route template and counts by status class."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Finer than the default at the low end: most of this API answers in single-digit milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HttpMetrics:
    """Request latency and counts, labelled by method, route template and status class (bounded cardinality)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram("edgeloop_http_request_duration_seconds",
                                  "Time from request start to the end of the response, per route template.",
                                  ["method", "route"], registry=registry, buckets=LATENCY_BUCKETS)
        self.requests = Counter("edgeloop_http_requests", "HTTP requests answered, by status class.",
                                ["method", "route", "status_class"], registry=registry)
        # labels() takes a lock and builds a key on every call; the children are cached per label tuple instead.
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._counts: dict[tuple[str, str, str], Counter] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        method = method if method in KNOWN_METHODS else "OTHER"  # a client can send any token as a method
        key = (method, route)
        duration = self._durations.get(key)
        if duration is None:
            duration = self._durations.setdefault(key, self.duration.labels(method, route))
        duration.observe(seconds)
        count_key = (method, route, f"{status // 100}xx")
        count = self._counts.get(count_key)
        if count is None:
            count = self._counts.setdefault(count_key, self.requests.labels(*count_key))
        count.inc()

"""Observability of the control plane itself: request ids, JSON logs, Prometheus metrics, health probes."""

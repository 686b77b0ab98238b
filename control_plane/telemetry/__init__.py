"""Telemetry ingest: validated, deduplicated, batched storage of device windows."""

"""Shadow sketches as a device sends them (edge_agent/shadow.py), for ingest and gate tests."""

from __future__ import annotations

from typing import Any

from control_plane.telemetry.shadow import LATENCY_BUCKETS_MS, SHADOW_SCHEMA


def sketch(rollout: str, *, rows: int = 100, agree: int = 97, errors: int = 0, bucket: int = 2,
           stopped: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Return a consistent classification sketch: `rows` scored rows, all in latency bucket `bucket`."""
    samples = rows + errors
    latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    latency[bucket] = samples
    active = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    active[3] = samples
    labels = {"0": rows - rows // 2, "1": rows // 2} if rows else {}
    body = {"schema": SHADOW_SCHEMA, "model": {"name": "digits", "version": 2}, "rollout_id": rollout,
            "candidate": {"name": "digits", "version": 2, "sha256": "a" * 64}, "kind": "classification",
            "window_start": 1.0, "window_end": 2.0, "sample_rate": 1.0, "max_latency_ms": 50.0, "batches": 4,
            "samples": samples, "rows": rows, "agree": agree, "agreement": agree / rows if rows else None,
            "candidate_labels": labels, "latency_buckets_ms": list(LATENCY_BUCKETS_MS), "latency_counts": latency,
            "active_latency_counts": active, "error_buckets": None, "error_counts": None, "errors": errors,
            "dropped": 0, "stopped": stopped}
    body.update(overrides)
    return body

"""Topic names from docs/protocol.md, in one place."""

from __future__ import annotations

from typing import Literal

PREFIX = "edgeloop/devices"
DeviceTopic = Literal["manifest", "status", "presence", "telemetry"]


def device_topic(device_id: str, kind: DeviceTopic) -> str:
    """Return ``edgeloop/devices/{device_id}/{kind}``."""
    return f"{PREFIX}/{device_id}/{kind}"


def telemetry_ack_topic(device_id: str) -> str:
    """Return ``edgeloop/devices/{id}/telemetry/ack``: the window_seqs the control plane has settled."""
    return f"{PREFIX}/{device_id}/telemetry/ack"


def fleet_filter(kind: DeviceTopic) -> str:
    """Return the wildcard filter for one kind of message from every device."""
    return f"{PREFIX}/+/{kind}"


def device_id_from_topic(topic: str) -> str | None:
    """Return the device id in ``edgeloop/devices/{id}/...``, or None if the topic is not ours."""
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX or not parts[2]:
        return None
    return parts[2]

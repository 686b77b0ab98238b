"""Labelled rows from a simulated fleet: remember what each device was fed, post it for the windows it landed in.

A simulation knows the true label of every row it feeds a device; a real deployment gets them later from
people or downstream systems. Either way the rows reach the control plane the same way: per stored telemetry
window, through ``POST /api/v1/training/rows``. The demo records each batch with its feed time; a batch belongs
to the device's window whose ``[window_start, window_end)`` holds that time (device clock: same process here).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import httpx
import numpy as np

MAX_WINDOWS_PER_POST = 100  # the rows API's batch limit
MAX_ROWS_PER_WINDOW = 1_000


class RowRecorder:
    """Per device, the recent batches fed to it with their true labels (bounded, thread-safe)."""

    def __init__(self, max_batches_per_device: int = 2_000) -> None:
        self._batches: dict[str, deque[tuple[float, np.ndarray, np.ndarray]]] = {}
        self._max = max_batches_per_device
        self._lock = threading.Lock()

    def record(self, device_id: str, rows: np.ndarray, labels: np.ndarray, at: float | None = None) -> None:
        """Remember one batch fed to a device at ``at`` (now by default)."""
        with self._lock:
            batches = self._batches.setdefault(device_id, deque(maxlen=self._max))
            batches.append((time.time() if at is None else at, np.asarray(rows), np.asarray(labels)))

    def payload(self, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return rows-API entries for the stored windows that some recorded batch falls into."""
        entries = []
        with self._lock:
            for window in windows:
                batches = self._batches.get(str(window["device_id"]), ())
                inside = [(r, y) for t, r, y in batches if window["window_start"] <= t < window["window_end"]]
                if not inside:
                    continue
                rows = np.concatenate([r for r, _ in inside])[:MAX_ROWS_PER_WINDOW]
                labels = np.concatenate([y for _, y in inside])[:MAX_ROWS_PER_WINDOW]
                entries.append({"device_id": window["device_id"], "window_seq": int(window["window_seq"]),
                                "features": rows.astype(float).tolist(), "labels": [int(v) for v in labels]})
        return entries


def post_recorded_rows(client: httpx.Client, recorder: RowRecorder, device_ids: list[str]) -> dict[str, int]:
    """Post the recorded rows of these devices' stored windows; return the totals the API reported."""
    windows: list[dict[str, Any]] = []
    for device_id in device_ids:
        response = client.get("/api/v1/telemetry/windows", params={"device_id": device_id, "limit": 1000})
        response.raise_for_status()
        windows += response.json()
    entries = recorder.payload(windows)
    totals = {"stored_windows": 0, "stored_rows": 0}
    for start in range(0, len(entries), MAX_WINDOWS_PER_POST):
        response = client.post("/api/v1/training/rows", json={"windows": entries[start:start + MAX_WINDOWS_PER_POST]})
        response.raise_for_status()
        body = response.json()
        totals["stored_windows"] += int(body["stored_windows"])
        totals["stored_rows"] += int(body["stored_rows"])
    return totals

"""Per-device token bucket: a device may send `rate` windows/s on average and `burst` at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class DeviceRateLimiter:
    """Admit or refuse each window by device; state lives in this object (one per consumer), never globally."""

    def __init__(self, rate: float, burst: float, max_devices: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_devices = max_devices
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, device_id: str, now: float) -> bool:
        """Take one token from the device's bucket; False when it is empty."""
        bucket = self._buckets.get(device_id)
        if bucket is None:
            if len(self._buckets) >= self.max_devices:
                # Forget idle devices rather than grow without bound (device ids are attacker-chosen).
                self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < self.burst / self.rate}
            bucket = self._buckets[device_id] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

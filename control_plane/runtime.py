"""Process-lifetime tuning shared by the API server and standalone ingest consumers."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving_gc() -> Iterator[None]:
    """Freeze what start-up allocated out of the garbage collector while serving; unfreeze on shutdown."""
    # Everything alive after start-up (modules, routes, schemas, mappers, the ML libraries) lives as long as the
    # process. Frozen, the collector stops rescanning it, so an oldest-generation collection no longer lands on one
    # unlucky request as a pause of tens of milliseconds. The thresholds stay at their defaults: measured here,
    # a request leaves ~30 tracked objects behind, and a young-generation threshold of 50,000 turned ~66 pauses
    # of <1 ms into one of 30-120 ms for the same total. Unfrozen on shutdown, so a process that builds many
    # apps (the tests) still collects the old ones.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

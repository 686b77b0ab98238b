"""Agent tests run against a served control plane (uvicorn in a thread) with a simulated fleet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control_plane.db.session import Database
from tests.agents.harness import SimFleet
from tests.control_plane.events.conftest import Served, served

__all__ = ["served"]


@pytest.fixture
def fleet(served: Served, database: Database) -> Iterator[SimFleet]:
    """A model with versions 1 and 2, a baseline and no devices yet."""
    sim = SimFleet(served.url, database)
    sim.model(1, 2)
    yield sim
    sim.close()

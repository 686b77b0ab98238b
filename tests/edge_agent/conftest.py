"""Fixtures for edge agent tests (the helpers live in edge_support.py)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from edge_support import (
    ArtifactServer,
    Harness,
    ModelArtifact,
    Observer,
    PrivateSetup,
    Signer,
    build_models,
    edge_config,
)

from control_plane.mqtt.broker import PrivateMosquitto
from edge_agent.daemon import EdgeAgent


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelArtifact]:
    """Train two small digits MLPs; export fp32 (ZipMap and plain tensor) and an int8 quantised one."""
    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def signer() -> Signer:
    """Return the session's control-plane signing key."""
    return Signer()


@pytest.fixture(scope="session")
def artifact_server() -> Iterator[ArtifactServer]:
    """Serve artifacts for the whole session."""
    server = ArtifactServer()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="session")
def broker() -> Iterator[PrivateMosquitto]:
    """A session-wide private mosquitto."""
    instance = PrivateMosquitto(Path(tempfile.mkdtemp(prefix="edge-mosquitto-")), anonymous=True)
    instance.start()
    yield instance
    instance.stop()
    shutil.rmtree(instance.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def observer(broker: PrivateMosquitto) -> Iterator[Observer]:
    """A control-plane stand-in on the session broker."""
    instance = Observer(broker.port)
    yield instance
    instance.close()


@pytest.fixture
def agent_factory(
    tmp_path: Path, broker: PrivateMosquitto, artifact_server: ArtifactServer, signer: Signer
) -> Iterator[Callable[..., EdgeAgent]]:
    """Start in-process agents on the session broker; stop them at teardown."""
    agents: list[EdgeAgent] = []

    def make(device_id: str | None = None, broker_: PrivateMosquitto | None = None, **overrides: Any) -> EdgeAgent:
        device_id = device_id or f"dev-{uuid.uuid4().hex[:8]}"
        config = edge_config(tmp_path / device_id, broker_ or broker, artifact_server, signer, device_id,
                             **overrides)
        agent = EdgeAgent(config)
        agent.start()
        assert agent.link.connected.wait(10)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()


@pytest.fixture
def harness(observer: Observer, signer: Signer, artifact_server: ArtifactServer,
            models: dict[str, ModelArtifact]) -> Harness:
    """Return the deploy-and-check helper."""
    return Harness(observer, signer, artifact_server, models)


@pytest.fixture
def private_broker(
    signer: Signer, artifact_server: ArtifactServer, models: dict[str, ModelArtifact]
) -> Iterator[PrivateSetup]:
    """Start a private mosquitto this test may stop and restart."""
    instance = PrivateMosquitto(Path(tempfile.mkdtemp(prefix="edge-mosquitto-")), anonymous=True)
    instance.start()
    observer = Observer(instance.port)
    yield PrivateSetup(instance, observer, Harness(observer, signer, artifact_server, models))
    observer.close()
    instance.stop()
    shutil.rmtree(instance.workdir, ignore_errors=True)

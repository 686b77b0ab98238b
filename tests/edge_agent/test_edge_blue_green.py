"""Blue-green on real agents and a real mosquitto: stage, one signed cut-over, instant switch back, reboots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.fleet.acl import CONTROL_PLANE_USER
from control_plane.mqtt.broker import PrivateMosquitto
from edge_agent.bluegreen import cutover_topic
from edge_agent.daemon import EdgeAgent
from tests.edge_agent.edge_support import ArtifactServer, Harness, ModelArtifact, Observer, Signer, edge_config

pytestmark = pytest.mark.mqtt
REPO = Path(__file__).resolve().parents[2]


def cutover(rollout_id: str, sequence: int, target: ModelArtifact, **overrides: Any) -> dict[str, Any]:
    """Build a cut-over payload."""
    now = time.time()
    return {"schema": "edgeloop.cutover/v1", "rollout_id": rollout_id, "sequence": sequence,
            "target_sha256": target.sha256, "at": None, "issued_at": now, "expires_at": now + 3600, **overrides}


def publish_cutover(observer: Observer, signer: Signer, payload: dict[str, Any] | bytes) -> None:
    """Sign and publish a retained cut-over command for the whole group."""
    message = signer.envelope(payload) if isinstance(payload, dict) else payload
    rollout = payload["rollout_id"] if isinstance(payload, dict) else "ro_x"
    observer.client.publish(cutover_topic(rollout), message, qos=1, retain=True).wait_for_publish(10)


def stage(harness: Harness, device_id: str, sequence: int, model: ModelArtifact, rollout_id: str,
          **overrides: Any) -> None:
    """Publish a stage-only manifest."""
    manifest = harness.manifest(device_id, sequence, model, rollout_id=rollout_id, stage_only=True, **overrides)
    harness.publish(device_id, manifest)


def test_stage_cut_over_the_group_and_switch_back(
    agent_factory: Callable[..., EdgeAgent], harness: Harness, models: dict[str, ModelArtifact]
) -> None:
    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    rollout = f"ro_bg_{uuid.uuid4().hex[:6]}"
    agents = [agent_factory() for _ in range(3)]
    for agent in agents:
        harness.deploy(agent, 1, v1)
    good, also_good, bad = agents
    stage(harness, good.config.device_id, 2, v2, rollout)
    stage(harness, also_good.config.device_id, 2, v2, rollout)
    # A model that fails its self-test is never staged: that device must not switch.
    wrong = [(label + 1) % 10 for label in v2.labels]
    stage(harness, bad.config.device_id, 2, v2, rollout, self_test={"expected_labels": wrong})
    for agent in (good, also_good):
        harness.observer.wait_status(agent.config.device_id, "staged", 2)
        harness.assert_serving(agent, v1)  # Staged, not activated.
    harness.observer.wait_status(bad.config.device_id, "failed", 2)

    publish_cutover(harness.observer, harness.signer, cutover(rollout, 1, v2))
    for agent in (good, also_good):
        event = harness.observer.wait_status(agent.config.device_id, "switched", 1)
        assert event["model"]["version"] == 2 and event["rollout_id"] == rollout
        harness.assert_serving(agent, v2)
    harness.assert_serving(bad, v1)
    assert not [e for e in harness.observer.statuses(bad.config.device_id) if e["state"] == "switched"]

    # Switching back needs no download: the old model never left the other slot.
    requests_before = len(harness.server.requests)
    publish_cutover(harness.observer, harness.signer, cutover(rollout, 2, v1))
    for agent in (good, also_good):
        harness.observer.wait_status(agent.config.device_id, "switched", 2)
        harness.assert_serving(agent, v1)
        active = agent.slots.active()
        assert active is not None and active["previous"]["sha256"] == v2.sha256
    assert len(harness.server.requests) == requests_before
    # The retained command again (an old sequence) changes nothing.
    publish_cutover(harness.observer, harness.signer, cutover(rollout, 1, v2))
    time.sleep(0.5)
    harness.assert_serving(good, v1)


def test_forged_expired_and_malformed_cut_overs_are_rejected(
    agent_factory: Callable[..., EdgeAgent], harness: Harness, models: dict[str, ModelArtifact], signer: Signer
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    rollout = f"ro_bg_{uuid.uuid4().hex[:6]}"
    agent = agent_factory()
    device = agent.config.device_id
    harness.deploy(agent, 1, v1)
    stage(harness, device, 2, v2, rollout)
    harness.observer.wait_status(device, "staged", 2)
    bad = [
        signer.envelope(cutover(rollout, 1, v2), key=Ed25519PrivateKey.generate()),  # forged
        signer.envelope(cutover(rollout, 2, v2, issued_at=1.0, expires_at=2.0)),  # expired
        signer.envelope({**cutover(rollout, 3, v2), "sequence": 2**70}),  # beyond int64
        signer.envelope(cutover(rollout, 4, v2, target_sha256="0" * 63)),
        signer.envelope(b'{"schema": "edgeloop.cutover/v1", "at": NaN}'),
        json.dumps(cutover(rollout, 5, v2)).encode(),  # unsigned
        b"[" * 100_000,
    ]
    for message in bad:
        harness.observer.client.publish(cutover_topic(rollout), message, qos=1).wait_for_publish(10)
    harness.observer.wait(lambda: len([e for e in harness.observer.statuses(device)
                                       if e["state"] == "rejected"]) >= len(bad))
    harness.assert_serving(agent, v1)
    # A newer stage-only manifest replaces the staged model; a cut-over to the old staged sha finds nothing.
    stage(harness, device, 3, models["v2_int8"], rollout)
    harness.observer.wait_status(device, "staged", 3)
    publish_cutover(harness.observer, harness.signer, cutover(rollout, 6, v2))
    assert harness.observer.wait_status(device, "not_switched", 6)["reason"] == "not_staged"
    harness.assert_serving(agent, v1)
    # A scheduled cut-over waits for its time, then switches.
    publish_cutover(harness.observer, harness.signer, cutover(rollout, 7, models["v2_int8"], at=time.time() + 1.0))
    harness.observer.wait_status(device, "scheduled", 7)
    harness.assert_serving(agent, v1)
    harness.observer.wait_status(device, "switched", 7)
    harness.assert_serving(agent, models["v2_int8"])


class AgentProcess:
    """`python -m edge_agent` for one state dir; killable with SIGKILL and restartable."""

    def __init__(self, config: Any) -> None:
        self.env = {
            **os.environ, "PYTHONPATH": str(REPO),
            "EDGELOOP_EDGE_DEVICE_ID": config.device_id, "EDGELOOP_EDGE_DEVICE_TOKEN": config.device_token,
            "EDGELOOP_EDGE_BROKER_URL": config.broker_url, "EDGELOOP_EDGE_CONTROL_PLANE_URL": config.control_plane_url,
            "EDGELOOP_EDGE_STATE_DIR": str(config.state_dir),
            "EDGELOOP_EDGE_TRUSTED_PUBLIC_KEY": config.trusted_public_key, "EDGELOOP_EDGE_RECONNECT_MIN_S": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, pause_at: str | None = None) -> None:
        env = {**self.env, **({"EDGELOOP_EDGE_TEST_PAUSE_AT": pause_at} if pause_at else {})}
        self.process = subprocess.Popen([sys.executable, "-m", "edge_agent", "--log-level", "ERROR"], env=env,
                                        stderr=subprocess.DEVNULL)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("point, switched", [("cutover_before_commit", False), ("cutover_after_commit", True)])
def test_reboot_mid_cut_over_comes_back_on_one_model_and_says_which(
    tmp_path: Path, broker: PrivateMosquitto, artifact_server: ArtifactServer, signer: Signer, harness: Harness,
    models: dict[str, ModelArtifact], point: str, switched: bool,
) -> None:
    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    device = f"dev-{uuid.uuid4().hex[:8]}"
    rollout = f"ro_bg_{uuid.uuid4().hex[:6]}"
    config = edge_config(tmp_path / device, broker, artifact_server, signer, device)
    process = AgentProcess(config)
    process.start(pause_at=point)
    try:
        harness.publish(device, harness.manifest(device, 1, v1))
        harness.observer.wait_status(device, "activated", 1)
        stage(harness, device, 2, v2, rollout)
        harness.observer.wait_status(device, "staged", 2)
        publish_cutover(harness.observer, signer, cutover(rollout, 1, v2))
        deadline = time.monotonic() + 30
        while not (config.state_dir / f"paused-{point}").exists():
            assert time.monotonic() < deadline, "the agent never reached the pause point"
            time.sleep(0.05)
        process.kill9()
        process.start()
        # The boot says which model it came back on; before the commit the retained command then switches it.
        event = harness.observer.wait(lambda: [e for e in harness.observer.statuses(device)
                                               if e["reason"] == "cutover_interrupted"])[0]
        assert event["state"] == ("switched" if switched else "staged")
        assert event["model"]["version"] == (2 if switched else 1)
        harness.observer.wait(lambda: [e for e in harness.observer.statuses(device)
                                       if e["state"] == "switched" and e["model"]["version"] == 2])
        active = json.loads((config.state_dir / "active.json").read_text())
        assert active["sha256"] == v2.sha256 and active["previous"]["sha256"] == v1.sha256
    finally:
        process.stop()


def test_cut_over_through_an_authenticated_broker_and_its_acl(
    tmp_path: Path, artifact_server: ArtifactServer, signer: Signer, models: dict[str, ModelArtifact]
) -> None:
    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    rollout = f"ro_bg_{uuid.uuid4().hex[:6]}"
    with PrivateMosquitto() as secured:
        secured.add_user("bg-dev-1", "pw-one")
        secured.add_user("bg-dev-2", "pw-two")
        observer = Observer.__new__(Observer)
        observer.events, observer.presence, observer.telemetry = [], {}, []
        observer.cond = threading.Condition()
        observer.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cp-observer")
        secured.authorise(observer.client, CONTROL_PLANE_USER)
        observer.client.on_connect = lambda c, *_: c.subscribe([("edgeloop/devices/+/status", 1)])
        observer.client.on_message = observer._on_message
        observer.client.connect("127.0.0.1", secured.port, 30)
        observer.client.loop_start()
        harness = Harness(observer, signer, artifact_server, models)
        agents = []
        try:
            for device, password in (("bg-dev-1", "pw-one"), ("bg-dev-2", "pw-two")):
                config = edge_config(tmp_path / device, secured, artifact_server, signer, device,
                                     broker_username=device, broker_password=password)
                agent = EdgeAgent(config)
                agent.start()
                assert agent.link.connected.wait(10)
                agents.append(agent)
                harness.deploy(agent, 1, v1)
                stage(harness, device, 2, v2, rollout)
                observer.wait_status(device, "staged", 2)
            publish_cutover(observer, signer, cutover(rollout, 1, v2))
            for agent in agents:
                observer.wait_status(agent.config.device_id, "switched", 1)
                harness.assert_serving(agent, v2)
        finally:
            for agent in agents:
                agent.stop()
            observer.close()

"""The fleet simulator: many real agents, one epoll loop, artifacts and sessions shared per sha256."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import EdgeConfig
from edge_agent.simulator import Fleet, fleet_configs, run_fleet

pytestmark = pytest.mark.mqtt
REPO = Path(__file__).resolve().parents[2]


def _template(broker: Any, server: Any, signer: Any, tmp_path: Path) -> EdgeConfig:
    return EdgeConfig(device_id="template", device_token=server.token, broker_url=f"mqtt://127.0.0.1:{broker.port}",
                      control_plane_url=server.base, state_dir=tmp_path, trusted_public_key=signer.public_b64,
                      download_backoff_s=0.05)


def test_fleet_on_descriptors_above_fd_setsize_rolls_out_with_shared_sessions(
    tmp_path: Path, broker: Any, artifact_server: Any, signer: Any, harness: Any
) -> None:
    # Push every client socket past select()'s 1024 limit: paho's own loop would fail here.
    gc.collect()  # close descriptors of earlier tests' garbage now, not in the middle of this test
    ballast = [os.open(os.devnull, os.O_RDONLY)]
    while ballast[-1] < 1100:
        ballast.append(os.open(os.devnull, os.O_RDONLY))
    fleet = None
    try:
        prefix = f"sim{os.getpid()}-{tmp_path.name[-6:]}-"
        configs = fleet_configs(devices=40, template=_template(broker, artifact_server, signer, tmp_path),
                                state_root=tmp_path, prefix=prefix, token=artifact_server.token)
        fleet = Fleet(configs, shared_root=tmp_path / "_shared", workers=4)
        fleet.start()
        assert fleet.wait_until(lambda f: f.snapshot()["connected"] == 40, 30)
        fds = [d.client.socket().fileno() for d in fleet.devices.values()]  # type: ignore[union-attr]
        # Almost all (a late-closed descriptor of another test may free a low number for one of them).
        assert sum(fd > 1024 for fd in fds) >= 35
        v1 = harness.models["v1_int8"]
        url = artifact_server.add(v1.data)
        for config in configs:
            manifest = harness.manifest(config.device_id, 1, v1)
            manifest["artifact"]["url"] = url
            harness.publish(config.device_id, manifest)
        evil = harness.manifest(configs[0].device_id, 2, v1, self_test={"expected_labels": [0] * len(v1.labels)})

        def all_active(f: Fleet) -> bool:
            # The in-memory swap follows the durable commit, so wait for both.
            return all((d.slots.active() or {}).get("sha256") == v1.sha256 and d.engine.runtime is not None
                       and d.engine.runtime.info["sha256"] == v1.sha256 for d in f.devices.values())

        assert fleet.wait_until(all_active, 60)
        snapshot = fleet.snapshot()
        assert snapshot["sessions_loaded"] == 1
        assert snapshot["active_models"] == {"digits-mlp@1": 40}
        # Every device fetched the artifact itself over HTTP with its token ...
        fetches = [r for r in artifact_server.requests if r["path"] == url.removeprefix(artifact_server.base)]
        assert len(fetches) >= 40 and all(r["auth"] == f"Bearer {artifact_server.token}" for r in fetches)
        # ... but the bytes live once on disk (hard links) and the session once in memory.
        inodes = {os.stat(d.slots.model_path("a")).st_ino for d in fleet.devices.values()}
        assert len(inodes) == 1
        sessions = {id(d.engine.runtime.session) for d in fleet.devices.values()}  # type: ignore[union-attr]
        assert len(sessions) == 1
        for device in list(fleet.devices.values())[:5]:
            labels, _ = device.engine.predict(v1.inputs)
            assert labels.tolist() == v1.labels
        for config in configs:
            harness.observer.wait_status(config.device_id, "activated", 1)
        # A bad update for one device fails there and nowhere else.
        harness.publish(configs[0].device_id, evil)
        event = harness.observer.wait_status(configs[0].device_id, "failed", 2)
        assert event["reason"] == "self_test_failed"
        assert all_active(fleet)
    finally:
        if fleet is not None:
            fleet.stop()
        for fd in ballast:
            os.close(fd)


def test_run_fleet_reports_connections(tmp_path: Path, broker: Any, artifact_server: Any, signer: Any) -> None:
    report = run_fleet(devices=5, template=_template(broker, artifact_server, signer, tmp_path),
                       state_root=tmp_path, duration_s=1.5, prefix=f"run-{tmp_path.name[-6:]}-")
    assert report["devices"] == 5 and report["connected"] == 5
    assert report["all_connected_after_s"] is not None
    assert report["fd_limit"] >= 1024


def test_simulator_command_line(tmp_path: Path, broker: Any, signer: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.simulator", "--devices", "3", "--duration", "1.5",
         "--broker-url", f"mqtt://127.0.0.1:{broker.port}", "--public-key", signer.public_b64,
         "--state-root", str(tmp_path), "--prefix", f"cli-{tmp_path.name[-6:]}-"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
    )
    report = json.loads(result.stdout)
    assert report["connected"] == 3


def test_fleet_reconnects_and_resubscribes_after_a_broker_restart(
    tmp_path: Path, private_broker: Any, artifact_server: Any, signer: Any
) -> None:
    setup = private_broker
    configs = fleet_configs(devices=5, template=_template(setup.broker, artifact_server, signer, tmp_path),
                            state_root=tmp_path, prefix="restart-", token=artifact_server.token)
    for index, config in enumerate(configs):
        configs[index] = replace(config, reconnect_min_s=0.2, reconnect_max_s=1.0)
    fleet = Fleet(configs, shared_root=tmp_path / "_shared")
    fleet.start()
    try:
        assert fleet.wait_until(lambda f: f.snapshot()["connected"] == 5, 30)
        setup.broker.stop()
        assert fleet.wait_until(lambda f: f.snapshot()["connected"] == 0, 30)
        setup.broker.start()
        assert fleet.wait_until(lambda f: f.snapshot()["connected"] == 5, 30)
        assert fleet.wait_until(lambda f: setup.observer.client.is_connected(), 30)  # the test's own client
        v1 = setup.harness.models["v1_plain"]
        for config in configs:
            setup.harness.publish(config.device_id, setup.harness.manifest(config.device_id, 1, v1))
        for config in configs:
            setup.observer.wait_status(config.device_id, "activated", 1)
    finally:
        fleet.stop()


def test_real_per_device_tokens_override_the_template(tmp_path: Path) -> None:
    from edge_agent.config import EdgeConfig

    template = EdgeConfig(device_id="t", device_token="", broker_url="mqtt://127.0.0.1:1", control_plane_url="http://x",
                          state_dir=tmp_path, trusted_public_key="k")
    configs = fleet_configs(devices=3, template=template, state_root=tmp_path, prefix="d-",
                            tokens={"d-00001": "elp_real_secret"})
    assert [c.device_token for c in configs] == ["d-00000", "elp_real_secret", "d-00002"]
    assert configs[2].state_dir == tmp_path / "d-00002"

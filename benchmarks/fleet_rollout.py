"""Rollout of an int8 model to 1,000 simulated devices over a local tuned mosquitto, against raw broker fan-out.

Measured in one run on one machine:
- reference (peer): mosquitto's raw fan-out of 1,000 retained per-device manifests of the real size, from the
  first publish until the last of 1,000 subscribers (one epoll loop of paho clients) has received its message;
- Edgeloop: from `POST /api/v1/fleet/deployments` until the control plane's rollout is `succeeded`, i.e. every
  device downloaded the artifact over HTTP with its own token, checked sha256 and signature, ran the
  self-test, activated, and its `activated` status came back through the bridge into the database.
  The device-side time (all simulated devices report `activated`) is recorded too.

Control plane: `edgeloop serve` in a subprocess (one uvicorn worker, SQLite WAL, MQTT bridge on MQTT 5 with a
shared subscription). Devices: edge_agent.simulator.Fleet in this process (one epoll thread, 4 OTA workers,
artifact file and onnxruntime session shared per sha256; everything else per device).

Usage: python benchmarks/fleet_rollout.py [--devices 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

NAME = "fleet_rollout"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
TARGET_S = 30.0


def _recorder(received: dict[int, float], index: int) -> Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]:
    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        received.setdefault(index, time.perf_counter())
    return on_message


def _caller(fn: Callable[[], Any]) -> Callable[[], None]:
    def call() -> None:
        fn()
    return call


def _disconnect_all(clients: list[mqtt.Client]) -> None:
    for client in clients:
        client.disconnect()


def raw_fanout(port: int, count: int, envelope: bytes) -> float:
    """Publish `count` retained per-device messages; return seconds until all `count` subscribers have theirs."""
    from edge_agent.fleet_loop import FleetLoop

    loop = FleetLoop()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    received: dict[int, float] = {}
    subscribed = threading.Semaphore(0)
    clients = []
    for index in range(count):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fan-{index}", protocol=mqtt.MQTTv311)
        topic = f"bench/devices/{index}/manifest"
        client.on_connect = lambda c, u, f, rc, p, t=topic: c.subscribe(t, qos=1)
        client.on_subscribe = lambda *_: subscribed.release()
        client.on_message = _recorder(received, index)
        loop.attach(client)
        client.connect_async("127.0.0.1", port, 60)
        loop.call_soon(_caller(client.reconnect))
        clients.append(client)
    for _ in range(count):
        if not subscribed.acquire(timeout=60):
            raise RuntimeError("subscribers did not all subscribe")
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fan-pub", protocol=mqtt.MQTTv311)
    publisher.max_inflight_messages_set(100)
    publisher.connect("127.0.0.1", port, 60)
    publisher.loop_start()
    started = time.perf_counter()
    infos = [publisher.publish(f"bench/devices/{i}/manifest", envelope, qos=1, retain=True) for i in range(count)]
    deadline = time.monotonic() + 60
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = max(received.values()) - started if len(received) == count else float("nan")
    # The measurement is taken; PUBACKs only tidy up. One bound for all of them: waiting 10 s per message hung a
    # 3,000-device run for hours when the publisher had to reconnect after its publishes were delivered.
    settle = time.monotonic() + 30
    while not all(info.is_published() for info in infos) and time.monotonic() < settle:
        time.sleep(0.05)
    for i in range(count):  # Clear the retained messages again.
        publisher.publish(f"bench/devices/{i}/manifest", b"", qos=1, retain=True)
    publisher.disconnect()
    publisher.loop_stop()
    loop.call_soon(lambda: _disconnect_all(clients))
    time.sleep(0.5)
    loop.stop()
    thread.join(5)
    return elapsed


def prepare_control_plane(data_dir: Path, devices: int, mqtt_url: str, port: int,
                          estimator: Any = None) -> dict[str, Any]:
    """Migrate, register the demo int8 model, provision devices; return tokens and a sample manifest size."""
    from control_plane.auth import service as auth_service
    from control_plane.auth.roles import Role
    from control_plane.auth.schemas import TokenCreate
    from control_plane.db.migrate import upgrade
    from control_plane.db.session import Database
    from control_plane.fleet import service
    from control_plane.fleet.manifests import ManifestFactory
    from control_plane.fleet.schemas import DeviceCreate
    from control_plane.registry import artifacts, pipeline
    from control_plane.registry import service as registry
    from control_plane.registry.store import ArtifactStore
    from control_plane.settings import Settings

    settings = Settings(data_dir=data_dir, port=port, mqtt_url=mqtt_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    factory = ManifestFactory.from_settings(settings, store)
    data = pipeline.load_sklearn_dataset("digits")
    tokens: dict[str, str] = {}
    with database.transaction() as session:
        result = pipeline.register_quantized_model(
            session=session, store=store, actor="admin:bench", model_name="digits-mlp", data=data,
            estimator=estimator if estimator is not None else pipeline.train_mlp(data), params={"hidden": [256, 256]})
        _, operator = auth_service.create_token(session=session, actor="admin:bench",
                                                request=TokenCreate(name="bench", role=Role.OPERATOR))
        for index in range(devices):
            _, secrets = service.provision_device(
                session=session, actor="admin:bench", request=DeviceCreate(id=f"sim-{index:05d}", group="bench"))
            tokens[f"sim-{index:05d}"] = secrets.token
        version = registry.get_version(session=session, model_name="digits-mlp", version=result.version)
        artifact = artifacts.pick_artifact(model_version=version)
        template = factory.template(session, version=version, artifact=artifact)
        envelope, _ = factory.sign(template, device_id="sim-00000", sequence=1, rollout_id="ro_sample",
                                   now=time.time())
    database.dispose()
    return {"tokens": tokens, "operator": operator, "public_key": factory.signer.public_b64,
            "envelope": envelope.encode(), "int8_bytes": artifact.size, "quantization": artifact.quantization,
            "version": result.version}


def measure(devices: int, workers: int = 64, keep: bool = False, estimator: Any = None) -> dict[str, Any]:
    """Roll out to ``devices`` fresh simulated devices; return raw fan-out, rollout and device-side seconds.

    ``estimator``: an already trained digits MLP to register (a growth run trains once for all sizes).
    """
    from control_plane.mqtt.broker import PrivateMosquitto, free_port, wait_for_port
    from edge_agent.config import EdgeConfig
    from edge_agent.fleet_loop import raise_fd_limit
    from edge_agent.simulator import Fleet

    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-fleet-"))
    os.chmod(work, 0o755)  # mosquitto, started as root, drops to its own user and must reach its log dir
    # The same tuned private mosquitto the demo and tests use; no persistence, unlimited connections.
    broker = PrivateMosquitto(work / "mosquitto", persistence=False, extra_config="max_connections -1",
                              anonymous=True).start()  # throughput only: auth is measured nowhere here
    broker_port = broker.port
    server: subprocess.Popen[bytes] | None = None
    fleet: Fleet | None = None
    try:
        cp_port = free_port()
        mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
        prepared = prepare_control_plane(work / "cp", devices, mqtt_url, cp_port, estimator)
        fanout_s = raw_fanout(broker_port, devices, prepared["envelope"])
        env = {**os.environ, "EDGELOOP_DATA_DIR": str(work / "cp"), "EDGELOOP_PORT": str(cp_port),
               "EDGELOOP_MQTT_URL": mqtt_url, "EDGELOOP_FLEET_STEP_SECONDS": "0.5"}
        server = subprocess.Popen([sys.executable, "-m", "control_plane.cli.main", "serve"], env=env,
                                  stdout=open(work / "cp.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        if not wait_for_port(cp_port, 60):
            raise RuntimeError(f"the control plane did not start; see {work / 'cp.log'}")
        template = EdgeConfig(device_id="t", device_token="", broker_url=mqtt_url,
                              control_plane_url=f"http://127.0.0.1:{cp_port}", state_dir=work / "devices",
                              trusted_public_key=prepared["public_key"])
        configs = [replace(template, device_id=d, device_token=t, state_dir=work / "devices" / d)
                   for d, t in prepared["tokens"].items()]
        fleet = Fleet(configs, shared_root=work / "devices" / "_shared", workers=workers)
        fleet.start()
        if not fleet.wait_until(lambda f: f.snapshot()["connected"] == devices, 120):
            raise RuntimeError(f"only {fleet.snapshot()['connected']} devices connected")
        headers = {"Authorization": f"Bearer {prepared['operator']}"}
        base = f"http://127.0.0.1:{cp_port}/api/v1"
        with httpx.Client(timeout=60) as http:
            started, started_wall = time.perf_counter(), time.time()
            response = http.post(f"{base}/fleet/deployments", headers=headers, json={
                "model": "digits-mlp", "version": prepared["version"], "selector": {"group": "bench"}})
            response.raise_for_status()
            rollout_id = response.json()["id"]
            deploy_call_s = time.perf_counter() - started
            device_side_s = None
            state, progress, read = "in_progress", {}, {}
            while time.perf_counter() - started < 300:
                # Cheap device-side check (in-memory last status), so polling does not load the simulator.
                activated = sum(1 for d in fleet.devices.values()
                                if d.last_status and d.last_status["state"] == "activated")
                if device_side_s is None and activated == devices:
                    device_side_s = time.perf_counter() - started
                read = http.get(f"{base}/fleet/rollouts/{rollout_id}", headers=headers).json()
                state, progress = read["state"], read["progress"]
                if state in ("succeeded", "failed", "aborted"):
                    break
                time.sleep(0.25)
            # The server's own finish time, so the polling interval does not count.
            finished = datetime.fromisoformat(read["finished_at"]).timestamp() if read.get("finished_at") else None
            rollout_s = finished - started_wall if finished else time.perf_counter() - started
        snapshot = fleet.snapshot()
    finally:
        if fleet is not None:
            fleet.stop()
        if server is not None:
            server.terminate()
            server.wait(20)
        broker.stop()
    if keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return {"devices": devices, "fanout_s": fanout_s, "rollout_s": rollout_s, "device_side_s": device_side_s,
            "state": state, "progress": progress, "deploy_call_s": deploy_call_s,
            "active_models": snapshot["active_models"], "manifest_bytes": len(prepared["envelope"]),
            "artifact_bytes": prepared["int8_bytes"], "quantization": prepared["quantization"],
            "load_avg_1m": os.getloadavg()[0]}


def main() -> int:
    """Run the benchmark and write benchmarks/results/fleet_rollout.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=64, help="simulator OTA threads (fsync-bound: more overlap)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (database, logs) for inspection")
    args = parser.parse_args()
    load_start = list(os.getloadavg())
    run = measure(args.devices, args.workers, args.keep)
    fanout_s, rollout_s, device_side_s, state = run["fanout_s"], run["rollout_s"], run["device_side_s"], run["state"]
    ratio = rollout_s / fanout_s
    passed = state == "succeeded" and rollout_s <= TARGET_S
    load_end = list(os.getloadavg())
    result = {
        "name": NAME,
        "title": f"int8 rollout to {args.devices} simulated devices",
        "target": f"all {args.devices} devices activated within {TARGET_S:.0f} s",
        "measured": round(rollout_s, 3),
        "unit": "s",
        "peer": round(fanout_s, 3),
        "ratio": round(ratio, 2),
        "ratio_note": "Edgeloop rollout time / mosquitto's raw fan-out of the same number of retained manifests",
        "pass": passed,
        "checks": [
            {"name": f"deploy → all {args.devices} activated (control plane view)", "target": f"<= {TARGET_S:.0f} s",
             "measured": round(rollout_s, 3), "peer": round(fanout_s, 3), "unit": "s", "ratio": round(ratio, 2),
             "pass": passed},
            {"name": f"deploy → all {args.devices} activated (device view)", "target": "-",
             "measured": round(device_side_s, 3) if device_side_s else None, "peer": None, "unit": "s",
             "ratio": None, "pass": None},
        ],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_start": load_start,
                 "load_avg_end": load_end},
        "details": {"state": state, "progress": run["progress"], "deploy_call_s": round(run["deploy_call_s"], 3),
                    "device_side_all_activated_s": round(device_side_s, 3) if device_side_s else None,
                    "active_models": run["active_models"]},
        "config": {
            "edgeloop": {"server": "edgeloop serve (uvicorn, 1 worker)", "database": "sqlite (WAL)",
                         "bridge": "MQTT 5, shared subscription, batched event apply", "strategy": "all_at_once",
                         "manifest_bytes": run["manifest_bytes"], "artifact_bytes": run["artifact_bytes"],
                         "quantization": run["quantization"]},
            "devices": {"count": args.devices, "simulator": "edge_agent.simulator.Fleet, one process",
                        "ota_threads": args.workers},
            "peer": {"name": "mosquitto raw retained fan-out, 1 manifest per device, same size",
                     "subscribers": f"{args.devices} paho clients on one epoll loop (MQTT 3.1.1)",
                     "publisher": "one paho client, QoS 1, retained"},
            "broker": "mosquitto 2.0 (max_queued_messages 100000, max_inflight_messages 100, set_tcp_nodelay)",
        },
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'what':<58} {'seconds':>9}")
    print(f"{'mosquitto raw retained fan-out to ' + str(args.devices) + ' subscribers (peer)':<58} {fanout_s:>9.3f}")
    print(f"{'Edgeloop rollout: deploy → all activated in the control plane':<58} {rollout_s:>9.3f}")
    if device_side_s:
        print(f"{'  (device side: all simulated devices activated)':<58} {device_side_s:>9.3f}")
    print(f"{'ratio (rollout / raw fan-out)':<58} {ratio:>9.2f}")
    print(f"target <= {TARGET_S:.0f} s: {'PASS' if passed else 'FAIL'} (state {state}); "
          f"results in {RESULTS_DIR / (NAME + '.json')}")
    return 0 if passed else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

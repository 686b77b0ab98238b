"""Blue-green cut-over of 1,000 simulated devices against mosquitto's raw fan-out of one message, same run.

- reference (peer): one retained QoS 1 message published once to a topic that N subscribers (one epoll loop
  of paho clients) hold; time from the publish until the last subscriber has it;
- Edgeloop: every device first runs v1 and has v2 staged (downloaded, verified, self-tested in the inactive
  slot); then one signed cut-over command is published; time until every device has verified the
  signature, committed active.json (fsync), swapped its in-memory runtime and published `switched`
  (device view: the simulator's last status). Then the same for switching back to v1.

Devices: edge_agent.simulator.Fleet in this process (one epoll thread, OTA thread pool, artifact file and
onnxruntime session shared per sha256; state dir, signature check and commit per device).
Usage: python benchmarks/bluegreen_cutover.py [--devices 1000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NAME = "bluegreen_cutover"
TARGET_S = 5.0


def _recorder(received: dict[int, float], index: int) -> Any:
    def on_message(*_: Any) -> None:
        received.setdefault(index, time.perf_counter())
    return on_message


def raw_group_fanout(port: int, count: int, payload: bytes) -> float:
    """Publish one retained message to a topic `count` subscribers hold; return seconds until all have it."""
    from edge_agent.fleet_loop import FleetLoop

    loop = FleetLoop()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    received: dict[int, float] = {}
    subscribed = threading.Semaphore(0)
    clients = []
    topic = "bench/rollouts/fanout/cutover"
    for index in range(count):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bgfan-{index}", protocol=mqtt.MQTTv311)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: subscribed.release()
        client.on_message = _recorder(received, index)
        loop.attach(client)
        client.connect_async("127.0.0.1", port, 60)
        loop.call_soon(client.reconnect)  # type: ignore[arg-type]
        clients.append(client)
    for _ in range(count):
        if not subscribed.acquire(timeout=60):
            raise RuntimeError("subscribers did not all subscribe")
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bgfan-pub", protocol=mqtt.MQTTv311)
    publisher.connect("127.0.0.1", port, 60)
    publisher.loop_start()
    started = time.perf_counter()
    publisher.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    deadline = time.monotonic() + 60
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    elapsed = max(received.values()) - started if len(received) == count else float("nan")
    publisher.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()
    for client in clients:
        loop.call_soon(client.disconnect)  # type: ignore[arg-type]
    time.sleep(0.5)
    loop.stop()
    thread.join(5)
    return elapsed


def _count(fleet: Any, state: str, sequence: int | None = None) -> int:
    return sum(1 for d in fleet.devices.values() if d.last_status and d.last_status["state"] == state
               and (sequence is None or d.last_status["sequence"] == sequence))


def _wait(fleet: Any, state: str, sequence: int | None, total: int, timeout: float,
          started: float | None = None) -> float | None:
    started = time.perf_counter() if started is None else started
    while time.perf_counter() - started < timeout:
        if _count(fleet, state, sequence) == total:
            return time.perf_counter() - started
        time.sleep(0.005)
    return None


def main() -> int:
    """Run the benchmark and write benchmarks/results/bluegreen_cutover.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=64, help="simulator OTA threads (fsync-bound)")
    parser.add_argument("--quick", action="store_true", help="100 devices")
    args = parser.parse_args()
    devices = 100 if args.quick else args.devices
    from control_plane.mqtt.broker import PrivateMosquitto
    from edge_agent.bluegreen import cutover_topic
    from edge_agent.config import EdgeConfig
    from edge_agent.fleet_loop import raise_fd_limit
    from edge_agent.simulator import Fleet
    from tests.edge_agent.edge_support import ArtifactServer, Signer, build_models, make_manifest

    raise_fd_limit()
    load_start = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-bg-"))
    os.chmod(work, 0o755)
    broker = PrivateMosquitto(work / "mosquitto", persistence=False, extra_config="max_connections -1",
                              anonymous=True).start()
    models = build_models(work)
    v1, v2 = models["v1_int8"], models["v2_int8"]
    server, signer = ArtifactServer(), Signer()
    urls = {m.sha256: server.add(m.data) for m in (v1, v2)}
    rollout = "ro_bench_bg"
    fleet = None
    try:
        now = time.time()
        command = {"schema": "edgeloop.cutover/v1", "rollout_id": rollout, "sequence": 1, "target_sha256": v2.sha256,
                   "at": None, "issued_at": now, "expires_at": now + 3600}
        envelope = signer.envelope(command)
        fanout_s = raw_group_fanout(broker.port, devices, envelope)
        template = EdgeConfig(device_id="t", device_token=server.token, broker_url=f"mqtt://127.0.0.1:{broker.port}",
                              control_plane_url=server.base, state_dir=work / "devices",
                              trusted_public_key=signer.public_b64)
        ids = [f"bg-{i:05d}" for i in range(devices)]
        fleet = Fleet([replace(template, device_id=d, state_dir=work / "devices" / d) for d in ids],
                      shared_root=work / "devices" / "_shared", workers=args.workers)
        fleet.start()
        if not fleet.wait_until(lambda f: f.snapshot()["connected"] == devices, 120):
            raise RuntimeError("devices did not connect")
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bg-cp", protocol=mqtt.MQTTv311)
        publisher.max_inflight_messages_set(100)
        publisher.connect("127.0.0.1", broker.port, 60)
        publisher.loop_start()

        def send_all(sequence: int, model: Any, **extra: Any) -> None:
            for device_id in ids:
                payload = make_manifest(device_id, sequence, model, urls[model.sha256], **extra)
                publisher.publish(f"edgeloop/devices/{device_id}/manifest", signer.envelope(payload), qos=1,
                                  retain=True)

        send_all(1, v1)
        if _wait(fleet, "activated", 1, devices, 300) is None:
            raise RuntimeError(f"v1 did not activate everywhere: {fleet.snapshot()}")
        send_all(2, v2, rollout_id=rollout, stage_only=True)
        stage_s = _wait(fleet, "staged", 2, devices, 300)
        if stage_s is None:
            raise RuntimeError(f"v2 did not stage everywhere: {fleet.snapshot()}")
        time.sleep(1.0)  # Let the cut-over subscriptions settle (devices subscribe as they stage).
        results = {}
        for sequence, target, label in ((1, v2, "cut-over to v2"), (2, v1, "switch back to v1")):
            now = time.time()
            message = signer.envelope({**command, "sequence": sequence, "target_sha256": target.sha256,
                                       "issued_at": now, "expires_at": now + 3600})
            started = time.perf_counter()
            publisher.publish(cutover_topic(rollout), message, qos=1, retain=True)
            elapsed = _wait(fleet, "switched", sequence, devices, 60, started)
            results[label] = elapsed
        active = fleet.snapshot()["active_models"]
        publisher.disconnect()
        publisher.loop_stop()
    finally:
        if fleet is not None:
            fleet.stop()
        broker.stop()
        server.server.shutdown()
    cut = results["cut-over to v2"]
    back = results["switch back to v1"]
    passed = cut is not None and cut <= TARGET_S and back is not None and back <= TARGET_S
    result = {
        "name": NAME, "title": f"blue-green cut-over of {devices} simulated devices",
        "target": f"all {devices} switched within {TARGET_S:.0f} s of the command",
        "measured": round(cut, 3) if cut else None, "unit": "s", "peer": round(fanout_s, 3),
        "ratio": round(cut / fanout_s, 2) if cut else None,
        "ratio_note": "cut-over time / mosquitto's raw fan-out of one retained message to the same subscribers",
        "pass": passed,
        "checks": [
            {"name": f"cut-over → all {devices} switched", "target": f"<= {TARGET_S:.0f} s",
             "measured": round(cut, 3) if cut else None, "peer": round(fanout_s, 3), "unit": "s",
             "pass": bool(cut and cut <= TARGET_S)},
            {"name": f"switch back → all {devices} switched", "target": f"<= {TARGET_S:.0f} s",
             "measured": round(back, 3) if back else None, "peer": round(fanout_s, 3), "unit": "s",
             "pass": bool(back and back <= TARGET_S)},
        ],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_start": load_start,
                 "load_avg_end": list(os.getloadavg())},
        "details": {"staging_all_s": round(stage_s, 3), "active_models_after": active, "ota_threads": args.workers},
    }
    out = ROOT / "benchmarks" / "results" / f"{NAME}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("measured", "peer", "ratio", "pass", "checks", "host")}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

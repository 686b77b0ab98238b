"""`edgeloop demo`: the loop on one machine: broker, control plane, a simulated fleet and a waved rollout."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from control_plane.bootstrap import prepare
from control_plane.cli.context import CLI_ACTOR, console, db_session
from control_plane.main import create_app
from control_plane.mqtt.broker import EmbeddedAmqtt, PrivateMosquitto, start_private_broker
from control_plane.registry import pipeline
from control_plane.registry import service as registry
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from edge_agent.config import EdgeConfig
from edge_agent.simulator import Fleet

DEMO_MODEL = "digits-mlp"
DEMO_GROUP = "demo"


@dataclass(frozen=True)
class DemoResult:
    """What one demo run achieved."""

    rollout_id: str
    rollout_state: str
    devices_activated: int
    devices: int
    seconds: float
    broker_authenticated: bool = False


def ensure_demo_model(settings: Settings) -> None:
    """Train, quantise and register the digits model once (later starts reuse it)."""
    with db_session(settings) as session:
        if registry.list_models(session=session, limit=1):
            return
        console.print("building the demo model: MLP on scikit-learn digits → fp32 ONNX → int8 ONNX …")
        data = pipeline.load_sklearn_dataset("digits")
        result = pipeline.register_quantized_model(
            session=session, store=ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes),
            actor=CLI_ACTOR, model_name=DEMO_MODEL, data=data, estimator=pipeline.train_mlp(data),
            params={"hidden": [256, 256], "dataset": "digits", "quantization": "dynamic"},
        )
    console.print(f"registered {DEMO_MODEL} v{result.version}: {result.fp32_bytes:,} B fp32 → {result.int8_bytes:,} B "
                  f"int8 ({result.size_ratio:.2f}x), accuracy {result.accuracy_fp32:.3f} → {result.accuracy_int8:.3f}")


@contextlib.contextmanager
def broker_for(settings: Settings) -> Iterator[None]:
    """Use the configured broker, or spawn a private mosquitto (embedded amqtt without the binary)."""
    if settings.mqtt_url:
        yield
        return
    broker: PrivateMosquitto | EmbeddedAmqtt
    broker, protocol = start_private_broker()
    settings.mqtt_url, settings.mqtt_protocol = broker.url, protocol  # type: ignore[assignment]
    if isinstance(broker, PrivateMosquitto):
        # Password file + generated ACL: the control plane logs in as itself and writes each device's login.
        for name, value in broker.settings_overrides().items():
            setattr(settings, name, value)
        console.print(f"broker: mosquitto at {broker.url} (MQTT {protocol}), anonymous access off, "
                      "per-device logins and ACL")
    else:
        # amqtt cannot reload a password file or express per-device topic patterns (docs/security.md).
        console.print(f"broker: amqtt at {broker.url} (MQTT {protocol}) [bold red]WITHOUT authentication or ACL[/]"
                      " (mosquitto is not installed); a demo only, never expose it")
    try:
        yield
    finally:
        broker.stop()


@contextlib.contextmanager
def api_server(settings: Settings) -> Iterator[uvicorn.Server]:
    """Serve the API in a background thread until the block ends."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="edgeloop-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the API did not start on {settings.base_url}")
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


def provision(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Provision (or re-key) the demo devices and return their edge configs."""
    configs = []
    for index in range(count):
        device_id = f"demo-{index:02d}"
        created = client.post("/api/v1/fleet/devices", json={"id": device_id, "group": DEMO_GROUP,
                                                       "labels": {"site": "lab"}})
        if created.status_code == 409:  # a rerun: rotate the token, the old one is shown nowhere
            created = client.post(f"/api/v1/fleet/devices/{device_id}/token")
        created.raise_for_status()
        configs.append(created.json()["edge_config"])
    return configs


def roll_out(client: httpx.Client, timeout: float) -> dict[str, Any]:
    """Deploy the newest demo model version in waves and follow it to a terminal state."""
    version = client.get(f"/api/v1/models/{DEMO_MODEL}").json()["latest_version"]
    rollout = client.post("/api/v1/fleet/deployments", json={
        "model": DEMO_MODEL, "version": version, "selector": {"group": DEMO_GROUP},
        "strategy": {"kind": "waves", "waves": [25, 50, 100], "failure_threshold": 0.2, "wave_timeout_s": 60},
    })
    rollout.raise_for_status()
    body: dict[str, Any] = rollout.json()
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/fleet/rollouts/{body['id']}").json()
        progress = body["progress"]
        line = (f"rollout {body['id']}: {body['state']}, wave {body['current_wave'] + 1}/{len(body['wave_plan'])}, "
                f"{progress['succeeded']}/{progress['total']} activated, {progress['failed']} failed")
        if line != last:
            console.print(line, highlight=False)
            last = line
        if body["state"] in ("succeeded", "aborted", "failed", "rolled_back"):
            break
        time.sleep(0.5)
    return body


def run_demo(settings: Settings, *, devices: int = 8, once: bool = False, rollout_timeout: float = 120.0) -> DemoResult:
    """Run the loop; with ``once`` return after the rollout, else serve until interrupted."""
    prepare(settings)
    ensure_demo_model(settings)
    token = (settings.data_dir / "admin.token").read_text().strip()
    started = time.monotonic()
    with broker_for(settings), api_server(settings):
        client = httpx.Client(base_url=settings.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        sim_root = settings.data_dir / "sim"
        configs = [EdgeConfig(**{**c, "state_dir": sim_root / c["device_id"]}) for c in provision(client, devices)]
        fleet = Fleet(configs, shared_root=sim_root / "_shared", workers=2)
        fleet.start()
        try:
            console.print(f"fleet: {devices} simulated edge agents connecting to {settings.mqtt_url}")
            final = roll_out(client, rollout_timeout)
            activated = int(final["progress"]["succeeded"])
            result = DemoResult(final["id"], final["state"], activated, devices, time.monotonic() - started,
                                broker_authenticated=bool(settings.mqtt_username))
            _print_summary(settings, result)
            if not once:
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
            return result
        finally:
            fleet.stop()
            client.close()


def _print_summary(settings: Settings, result: DemoResult) -> None:
    token_file: Path = settings.data_dir / "admin.token"
    url = settings.base_url
    console.print(f"\n[bold green]Edgeloop is up[/] at {url}  (API docs: {url}/docs)")
    console.print(f"rollout {result.rollout_id}: {result.rollout_state}, {result.devices_activated}/{result.devices} "
                  f"devices activated in {result.seconds:.1f}s")
    auth = f'-H "Authorization: Bearer $(cat {token_file})"'
    paths = ("/api/v1/fleet/rollouts", "/api/v1/fleet/devices", f"/api/v1/models/{DEMO_MODEL}", "/api/v1/audit/verify")
    for path in paths:
        console.print(f"  curl {auth} {url}{path}", highlight=False)
    console.print("Ctrl-C stops the demo (broker, fleet and API).\n")

"""`edgeloop demo`: the loop on one machine: broker, control plane, a simulated fleet and a waved rollout."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from agents.control_plane_client import ControlPlaneError
from control_plane.approvals.schemas import ProposalState
from control_plane.bootstrap import prepare
from control_plane.cli.agents import start_in_process
from control_plane.cli.context import CLI_ACTOR, console, db_session
from control_plane.demo_loop import (
    FAULTY_CALL_SHARE,
    ROLLBACK_KINDS,
    Faults,
    approve_and_verify,
    approver_client,
    pending_ids,
    register_bad_version,
    telemetry_feed,
    wait_for_pending,
)
from control_plane.demo_retrain import Retraining, post_rows_when_requested, run_retraining
from control_plane.main import create_app
from control_plane.mqtt.broker import EmbeddedAmqtt, PrivateMosquitto, start_private_broker
from control_plane.registry import pipeline
from control_plane.registry import service as registry
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.training.labelling import RowRecorder
from edge_agent.config import EdgeConfig
from edge_agent.simulator import Fleet

DEMO_MODEL = "digits-mlp"
DEMO_GROUPS = ("demo-a", "demo-b")
STALE_RETRIES = 2  # fresh proposals the demo approves after a stale one, as the agents re-plan at most twice


@dataclass(frozen=True)
class DemoResult:
    """What one demo run achieved."""

    rollout_id: str
    rollout_state: str
    devices_activated: int
    devices: int
    seconds: float
    broker_authenticated: bool = False
    connected_s: float | None = None
    canary_rollout_id: str | None = None
    first_pending_s: float | None = None
    fault_to_pending_s: float | None = None
    fault_to_rollback_s: float | None = None
    proposal_id: str | None = None
    proposal_state: str | None = None
    verification: str | None = None
    recovered: bool = False
    rollback_state: str | None = None
    approval_to_recovery_s: float | None = None
    retraining: Retraining | None = None
    total_s: float | None = None


def stop_on_sigterm() -> None:
    """Let SIGTERM and SIGHUP unwind like Ctrl-C: broker, fleet, agents and API stopped, no port left."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)  # a closed terminal: the broker, in its own session, would stay up


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
    # A bounded graceful shutdown: an open browser tab's event stream would otherwise keep the server up.
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level="warning", timeout_graceful_shutdown=5))
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
        thread.join(60)  # the workers' last steps (audit checkpoint, drift pass) finish before the broker goes


def provision(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Provision (or re-key) the demo devices, half in each group, and return their edge configs."""
    configs = []
    for index in range(count):
        device_id = f"demo-{index:02d}"
        group = DEMO_GROUPS[0] if index < max(count // 2, 1) else DEMO_GROUPS[1]
        created = client.post("/api/v1/fleet/devices", json={"id": device_id, "group": group,
                                                       "labels": {"site": "lab"}})
        if created.status_code == 409:  # a rerun: rotate the token, the old one is shown nowhere
            created = client.post(f"/api/v1/fleet/devices/{device_id}/token")
        created.raise_for_status()
        configs.append({**created.json()["edge_config"], "group": group})
    return configs


def roll_out(client: httpx.Client, timeout: float, *, version: int | None = None,
             selector: dict[str, Any] | None = None, waves: list[int] | None = None) -> dict[str, Any]:
    """Deploy a demo model version (default: the newest) in waves and follow it to a terminal state."""
    if version is None:
        version = client.get(f"/api/v1/models/{DEMO_MODEL}").json()["latest_version"]
    rollout = client.post("/api/v1/fleet/deployments", json={
        "model": DEMO_MODEL, "version": version, "selector": selector or {"labels": {"site": "lab"}},
        "strategy": {"kind": "waves", "waves": waves or [25, 50, 100], "failure_threshold": 0.2,
                     "wave_timeout_s": 60},
    })
    rollout.raise_for_status()
    body: dict[str, Any] = rollout.json()
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/fleet/rollouts/{body['id']}").json()
        progress = body["progress"]
        line = (f"rollout {body['id']} (v{version}): {body['state']}, wave {body['current_wave'] + 1}/"
                f"{len(body['wave_plan'])}, {progress['succeeded']}/{progress['total']} activated, "
                f"{progress['failed']} failed")
        if line != last:
            console.print(line, highlight=False)
            last = line
        if body["state"] in ("succeeded", "aborted", "failed", "rolled_back"):
            break
        time.sleep(0.5)
    return body


def run_demo(settings: Settings, *, devices: int = 50, once: bool = False, auto_approve: bool = False,
             rollout_timeout: float = 120.0, loop_timeout: float = 180.0, window_seconds: float = 2.0,
             train_timeout: float = 300.0) -> DemoResult:
    """Run the loop; ``once`` returns after the first rollout, ``auto_approve`` after recovery and retraining."""
    started = time.monotonic()
    prepare(settings)
    ensure_demo_model(settings)
    token = (settings.data_dir / "admin.token").read_text().strip()
    faults = Faults(recorder=RowRecorder())
    bad_version = None if once else register_bad_version(settings, DEMO_MODEL)
    # Stopped in reverse order of start: fleet, agents (their calls need the API), API and its workers, broker.
    with broker_for(settings), api_server(settings), contextlib.ExitStack() as stack:
        if not once:
            stack.callback(start_in_process(settings).stop)
        client = stack.enter_context(httpx.Client(base_url=settings.base_url, timeout=30,
                                                  headers={"Authorization": f"Bearer {token}"}))
        sim_root = settings.data_dir / "sim"
        provisioning = time.monotonic()
        provisioned = provision(client, devices)
        faults.groups = {c["device_id"]: c.pop("group") for c in provisioned}
        configs = [EdgeConfig(**{**c, "state_dir": sim_root / c["device_id"]}) for c in provisioned]
        feed = None if once else telemetry_feed(faults, window_seconds=window_seconds)
        fleet = Fleet(configs, shared_root=sim_root / "_shared", workers=2, telemetry=feed)
        fleet.start()
        stack.callback(fleet.stop)
        console.print(f"fleet: {devices} simulated edge agents in groups {', '.join(DEMO_GROUPS)} connecting to "
                      f"{settings.mqtt_url}" + ("" if once else f", telemetry windows every {window_seconds:g}s"))
        # The raw bring-up (provisioned and connected), the reference the loop's own times are read against.
        fleet.wait_until(lambda f: f.snapshot()["connected"] == devices, rollout_timeout)
        connected_s = time.monotonic() - provisioning
        first = roll_out(client, rollout_timeout, version=1 if bad_version else None)
        result = DemoResult(first["id"], first["state"], int(first["progress"]["succeeded"]), devices,
                            time.monotonic() - started, broker_authenticated=bool(settings.mqtt_username),
                            connected_s=connected_s)
        if not once and bad_version is not None and result.rollout_state == "succeeded":
            result = _close_loop(settings, client, faults, bad_version, result, started=started,
                                 auto_approve=auto_approve, timeout=loop_timeout, windows=window_seconds,
                                 train_timeout=train_timeout)
        result = dataclasses.replace(result, total_s=time.monotonic() - started)
        _print_summary(settings, result)
        if not once and not auto_approve:
            with contextlib.suppress(KeyboardInterrupt):
                if result.first_pending_s is not None:
                    _post_rows_for_a_person(settings, client, faults, loop_timeout)
                threading.Event().wait()
            console.print("stopping: agents, fleet, API, broker …")
        return result


def _drifted_devices(faults: Faults) -> list[str]:
    return sorted(d for d, group in faults.groups.items() if group == DEMO_GROUPS[1])


def _post_rows_for_a_person(settings: Settings, client: httpx.Client, faults: Faults, timeout: float) -> None:
    """The interactive demo: the drifted group's labelled rows are posted when its retrain.request appears."""
    approver = approver_client(settings)
    try:
        if faults.recorder is not None:
            post_rows_when_requested(approver, client, faults.recorder, _drifted_devices(faults), timeout,
                                     ignore=frozenset())
        faults.recorder = None  # rows after the request's window are not its job's: stop keeping them
    finally:
        approver.close()


def _close_loop(settings: Settings, client: httpx.Client, faults: Faults, bad_version: int, result: DemoResult, *,
                started: float, auto_approve: bool, timeout: float, windows: float,
                train_timeout: float) -> DemoResult:
    """Inject the two faults, wait for the agents' proposals, and with ``auto_approve`` close the loop."""
    time.sleep(3 * windows)  # v1's clean windows first: the reference the new version is compared against
    approver = approver_client(settings)
    try:
        stale = frozenset(pending_ids(approver))  # a rerun's queue still holds the previous run's proposals
        console.print(f"[bold]fault 1[/]: canary rollout of the bad v{bad_version} to group {DEMO_GROUPS[0]} "
                      f"(it fails {FAULTY_CALL_SHARE:.0%} of its calls)")
        injected = time.monotonic()  # the clock starts at the first fault, so the canary's own rollout counts
        faults.bad_version = bad_version
        canary = roll_out(client, timeout, version=bad_version, selector={"group": DEMO_GROUPS[0]}, waves=[50, 100])
        console.print(f"[bold]fault 2[/]: covariate drift in group {DEMO_GROUPS[1]} "
                      "(lower contrast, raised black level)")
        faults.drifted_group = DEMO_GROUPS[1]
        pending = wait_for_pending(approver, timeout, ignore=stale)
        if pending is None:
            console.print(f"[bold red]no proposal reached the approval queue within {timeout:.0f}s[/]")
            return dataclasses.replace(result, canary_rollout_id=canary["id"])
        now = time.monotonic()
        result = dataclasses.replace(result, canary_rollout_id=canary["id"], first_pending_s=now - started,
                                     fault_to_pending_s=now - injected)
        console.print(f"[bold green]pending proposal[/] {pending.kind} ({pending.id}) "
                      f"{result.first_pending_s:.1f}s after start, {result.fault_to_pending_s:.1f}s after the fault")
        _print_approval_help(settings)
        rollback = pending if pending.kind in ROLLBACK_KINDS else wait_for_pending(approver, timeout,
                                                                                    kinds=ROLLBACK_KINDS, ignore=stale)
        if rollback is None:
            console.print("[bold red]no rollback proposal for the bad version[/]")
            return result
        result = dataclasses.replace(result, fault_to_rollback_s=time.monotonic() - injected)
        if rollback is not pending:
            console.print(f"[bold green]pending proposal[/] {rollback.kind} ({rollback.id}) "
                          f"{result.fault_to_rollback_s:.1f}s after the fault")
        if not auto_approve:  # a person approves in the web UI
            return result
        approved = time.monotonic()
        refused: set[str] = set()
        while True:
            try:
                recovery = approve_and_verify(approver, rollback, timeout)
                break
            except ControlPlaneError as exc:  # e.g. stale: the canary finished after the agent proposed
                console.print(f"[bold red]the approval was refused[/]: {exc.message}", highlight=False)
                if exc.status_code != 409 or "stale" not in exc.message or len(refused) >= STALE_RETRIES:
                    return result
                # As a person would: reject the stale proposal saying so; the agents re-plan from fresh evidence.
                approver.reject(rollback.id, f"stale: {exc.message}"[:200])
            refused.add(rollback.id)
            rollback = wait_for_pending(approver, timeout, kinds=ROLLBACK_KINDS, ignore=stale | refused)
            if rollback is None:
                console.print("[bold red]no fresh rollback proposal after the stale one[/]")
                return result
            console.print(f"[bold green]fresh proposal[/] {rollback.kind} ({rollback.id})")
            approved = time.monotonic()
        done = recovery.proposal
        result = dataclasses.replace(result, proposal_id=done.id, proposal_state=str(done.state),
                                     verification=str(done.verification), recovered=recovery.verified,
                                     rollback_state=recovery.rollback_state,
                                     approval_to_recovery_s=time.monotonic() - approved)
        others = [p.kind for p in approver.list_proposals(state=[ProposalState.PENDING]).items if p.id not in stale]
        console.print(f"proposal {done.id}: {done.state}, rollback {recovery.rollback_state}, verification "
                      f"{done.verification} ({done.verification_note}); still pending for a person: "
                      f"{', '.join(others) or 'none'}", highlight=False)
        if not recovery.verified or faults.recorder is None:
            return result
        retraining = run_retraining(approver, client, faults.recorder, _drifted_devices(faults), timeout=timeout,
                                    train_timeout=train_timeout, ignore=stale)
        faults.recorder = None
        return dataclasses.replace(result, retraining=retraining)
    finally:
        approver.close()


def _print_approval_help(settings: Settings) -> None:
    token_file: Path = settings.data_dir / "admin.token"
    console.print(f"approval queue: [bold]{settings.base_url}/ui/approvals[/]  (log in with the admin token in "
                  f"{token_file}: `cat {token_file}`; an approver token decides, the agent only proposes)",
                  highlight=False)


def _print_summary(settings: Settings, result: DemoResult) -> None:
    token_file: Path = settings.data_dir / "admin.token"
    url = settings.base_url
    console.print(f"\n[bold green]Edgeloop is up[/] at {url}  (API docs: {url}/docs)")
    console.print(f"rollout {result.rollout_id}: {result.rollout_state}, {result.devices_activated}/{result.devices} "
                  f"devices activated in {result.seconds:.1f}s")
    if result.first_pending_s is not None:
        console.print(f"time to first pending proposal: {result.first_pending_s:.1f}s from start "
                      f"({result.fault_to_pending_s:.1f}s from the fault)")
        _print_approval_help(settings)
    if result.approval_to_recovery_s is not None:
        outcome = "approval → recovery verified" if result.recovered else "[bold red]recovery NOT verified[/] after"
        console.print(f"{outcome}: {result.approval_to_recovery_s:.1f}s (proposal {result.proposal_id}: "
                      f"{result.proposal_state}, rollback {result.rollback_state}, verification {result.verification})")
    retraining = result.retraining
    if retraining is not None:
        ended = ("[bold green]" if retraining.honest else "[bold red]") + f"retraining {retraining.outcome}[/]"
        console.print(f"{ended}: {retraining.reason}", highlight=False)
    console.print(_timings(result), highlight=False, soft_wrap=True)  # one line: scripts and tests read it
    auth = f'-H "Authorization: Bearer $(cat {token_file})"'
    paths = ("/api/v1/fleet/rollouts", "/api/v1/fleet/devices", f"/api/v1/models/{DEMO_MODEL}", "/api/v1/audit/verify")
    for path in paths:
        console.print(f"  curl {auth} {url}{path}", highlight=False)
    console.print("Ctrl-C stops the demo (broker, fleet, agents and API).\n")


def _timings(result: DemoResult) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    return (f"timings ({result.devices} devices): start → fleet up {seconds(result.seconds)} (provisioned and "
            f"connected in {seconds(result.connected_s)}); fault injected → "
            f"first proposal pending {seconds(result.fault_to_pending_s)} (the rollback's "
            f"{seconds(result.fault_to_rollback_s)}); approval → recovery verified "
            f"{seconds(result.approval_to_recovery_s if result.recovered else None)}; "
            + ("" if result.retraining is None else _retraining_timings(result.retraining, seconds))
            + f"total {seconds(result.total_s)}")


def _retraining_timings(retraining: Retraining, seconds: Any) -> str:
    return (f"retraining {seconds(retraining.total_s)} (training job {seconds(retraining.job_s)}, canary approval → "
            f"rollout {retraining.canary_rollout_state or '-'} {seconds(retraining.approval_to_canary_s)}); ")

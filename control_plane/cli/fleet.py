"""`edgeloop fleet` commands: devices, provisioning, deployments and rollouts, broker ACL, fleet simulator.

Like the other CLI groups these act on the database directly; the running server's MQTT bridge publishes
the manifests they issue (it polls for unpublished ones).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from control_plane.cli.context import CLI_ACTOR, console, db_session, load_settings
from control_plane.cli.experiments import ab_design, print_experiment
from control_plane.errors import NotFound
from control_plane.fleet import abtest, rollouts, service, shadow
from control_plane.fleet.acl import mosquitto_acl
from control_plane.fleet.manifests import ManifestFactory
from control_plane.fleet.schemas import DeploymentCreate, DeviceCreate, Selector, Strategy, StrategyKind
from control_plane.governance.schemas import CardFormat
from control_plane.telemetry.lookup import BaselineCache

fleet_app = typer.Typer(help="Edge fleet: devices, rollouts, broker ACL, simulator.", no_args_is_help=True)
LabelOption = Annotated[list[str] | None, typer.Option("--label", help="key=value, repeatable")]
ReasonOption = Annotated[str, typer.Option(help="Recorded in the audit log.")]


def _labels(items: list[str] | None) -> dict[str, str]:
    labels = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {item!r}")
        labels[key] = value
    return labels


def _factory() -> ManifestFactory:
    return ManifestFactory.from_settings(load_settings())


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _toml(config: dict[str, Any], state_dir: str) -> str:
    lines = ["[edge]"] + [f"{k} = {json.dumps(v)}" for k, v in {**config, "state_dir": state_dir}.items()
                          if v is not None]
    return "\n".join(lines) + "\n"


def _print_rollout(read: Any) -> None:
    progress = read.progress
    console.print(f"{read.id} [{read.state.value}] {read.kind} {read.model['name']} v{read.model['version']} "
                  f"waves {read.wave_plan} (current {read.current_wave}) activated {progress.succeeded}/"
                  f"{progress.total} failed {progress.failed}" + (f" — {read.reason}" if read.reason else ""),
                  highlight=False, markup=False)


@fleet_app.command("devices")
def devices(group: Annotated[str | None, typer.Option()] = None, label: LabelOption = None) -> None:
    """List devices with desired and reported state."""
    table = Table("device", "group", "labels", "online", "seq", "reported model", "state", "last seen")
    with db_session(write=False) as session:
        for device in service.list_devices(session=session, group=group, labels=_labels(label) or None):
            model = device.reported_model or {}
            shown = f"{model.get('name', '')} v{model.get('version', '')}" if model else ""
            table.add_row(device.id, device.group_name or "", json.dumps(device.labels),
                          "yes" if device.online else "no", str(device.sequence), shown,
                          f"{device.reported_state or ''} {device.reported_reason or ''}".strip(),
                          f"{device.last_seen:%Y-%m-%d %H:%M:%S}" if device.last_seen else "")
    console.print(table)


@fleet_app.command("provision")
def provision(
    device_id: str, group: Annotated[str | None, typer.Option()] = None, label: LabelOption = None,
    config_out: Annotated[Path | None, typer.Option(help="Write the agent's TOML config here (0600).")] = None,
    state_dir: Annotated[str, typer.Option(help="state_dir to put in the written config.")] = "/var/lib/edgeloop",
) -> None:
    """Provision a device and print (or write) everything its agent needs, token included."""
    factory = _factory()
    with db_session() as session:
        device, secrets = service.provision_device(
            session=session, actor=CLI_ACTOR, request=DeviceCreate(id=device_id, group=group, labels=_labels(label)))
        provisioned = service.provisioned(device, secrets, factory)
    if config_out is not None:
        _write_private(config_out, _toml(provisioned.edge_config, state_dir))
        console.print(f"provisioned {device_id}; agent config written to {config_out}")
    else:
        console.print_json(provisioned.model_dump_json())


@fleet_app.command("deploy")
def deploy(
    model: str,
    version: Annotated[int | None, typer.Option()] = None,
    alias: Annotated[str | None, typer.Option()] = None,
    group: Annotated[str | None, typer.Option()] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="Device id, repeatable.")] = None,
    label: LabelOption = None,
    waves: Annotated[str | None, typer.Option(help="Percent waves, e.g. 1,10,50,100.")] = None,
    exponential: Annotated[str | None, typer.Option(help="BASE:FACTOR, e.g. 1:2.")] = None,
    failure_threshold: float = 0.1,
    min_finished: int = 1,
    wave_timeout: float = 600.0,
    quantization: Annotated[str | None, typer.Option(help="Default: int8 if the version has one.")] = None,
    strategy_kind: Annotated[StrategyKind | None, typer.Option(
        "--strategy", help="all_at_once, waves, exponential, blue_green (stage only; then `fleet cutover`), ab "
                           "(with --arm, --mde, --samples-per-device) or shadow (stage and shadow; the canary in "
                           "--waves starts when the gate passes).")] = None,
    arm: Annotated[list[str] | None, typer.Option("--arm", help="ab: VERSION:WEIGHT, repeatable; first = control.")
                   ] = None,
    mde: Annotated[float | None, typer.Option(help="ab: minimum detectable accuracy difference.")] = None,
    alpha: Annotated[float, typer.Option(help="ab: significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="ab: power.")] = 0.8,
    baseline_rate: Annotated[float, typer.Option(help="ab: the control's expected accuracy.")] = 0.9,
    samples_per_device: Annotated[int | None, typer.Option(help="ab: labelled outcomes expected per device.")
                                  ] = None,
    salt: Annotated[str | None, typer.Option(help="ab: hash with this instead of the experiment id.")] = None,
    sample_rate: Annotated[float | None, typer.Option(help="shadow: share of inputs scored.")] = None,
    shadow_budget_ms: Annotated[float | None, typer.Option(help="shadow: per-row budget (ms).")] = None,
    min_agreement: Annotated[float | None, typer.Option(help="shadow gate: agreement lower bound.")] = None,
    max_p95_ms: Annotated[float | None, typer.Option(help="shadow gate: candidate p95 upper bound (ms).")] = None,
    min_windows: Annotated[int | None, typer.Option(help="shadow gate: telemetry windows of evidence.")] = None,
) -> None:
    """Deploy a model version to the selected devices as a (waved) rollout, or run an A/B test of versions."""
    strategy: dict[str, Any] = {"failure_threshold": failure_threshold, "min_finished": min_finished,
                                "wave_timeout_s": wave_timeout}
    if strategy_kind is not None and strategy_kind not in (StrategyKind.WAVES, StrategyKind.EXPONENTIAL):
        strategy["kind"] = strategy_kind
    if strategy_kind == StrategyKind.AB:
        strategy["ab"] = ab_design(arm or [], mde=mde, alpha=alpha, power=power, baseline_rate=baseline_rate,
                                   samples_per_device=samples_per_device, salt=salt)
    if strategy_kind == StrategyKind.SHADOW:
        settings = {"sample_rate": sample_rate, "max_latency_ms": shadow_budget_ms}
        gate = {"min_agreement": min_agreement, "max_latency_ms": max_p95_ms, "min_windows": min_windows}
        strategy.update(shadow={k: v for k, v in settings.items() if v is not None},
                        gate={k: v for k, v in gate.items() if v is not None})
        if waves:
            strategy["then_waves"] = [float(w) for w in waves.split(",")]
    elif waves:
        strategy.update(kind=StrategyKind.WAVES, waves=[float(w) for w in waves.split(",")])
    elif exponential:
        base, _, factor = exponential.partition(":")
        strategy.update(kind=StrategyKind.EXPONENTIAL, base_count=int(base), increment_factor=float(factor or 2))
    request = DeploymentCreate(
        model=model, version=version, alias=alias, quantization=quantization, strategy=Strategy(**strategy),
        selector=Selector(device_ids=device or None, group=group, labels=_labels(label) or None))
    factory = _factory()
    with db_session() as session:
        rollout = service.create_deployment(session=session, factory=factory, request=request, actor=CLI_ACTOR)
        _print_rollout(service.rollout_read(session, rollout))


@fleet_app.command("experiment")
def experiment(experiment_id: str) -> None:
    """Show an A/B test (by its id or its rollout's id): arms, n, accuracy, intervals, p-values, the decision."""
    with db_session(write=False) as session:
        found = abtest.get_experiment(session=session, experiment_id=experiment_id)
        print_experiment(abtest.report(session, found, BaselineCache()))


@fleet_app.command("shadow")
def shadow_report(rollout_id: str) -> None:
    """Show a shadow rollout's candidate-vs-active comparison per cohort and its promotion gate."""
    with db_session(write=False) as session:
        report = shadow.report(session, rollout_id)
    console.print(f"{report.rollout_id} [{report.state}] gate: {report.verdict} over {report.windows} windows; "
                  f"candidate {report.candidate.get('name')} v{report.candidate.get('version')}")
    for reason in report.reasons:
        console.print(f"  {reason}")
    for c in report.cohorts:
        a, p95 = c.agreement, c.candidate_p95_ms
        console.print(f"  {c.cohort}: {c.verdict}  devices {c.devices}  windows {c.windows}  rows {c.rows}  "
                      f"agreement {_num(a['estimate'])} [{_num(a['lower'])}, {_num(a['upper'])}]  "
                      f"p95 <= {_num(p95['upper'])} ms (active p95 <= {_num(c.active_p95_ms['upper'])} ms)  "
                      f"errors {_num(c.error_rate['estimate'])}  dropped {c.dropped}  stopped {c.stopped or '-'}")
    if report.canary_rollout_id:
        console.print(f"  canary: {report.canary_rollout_id}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


@fleet_app.command("rollouts")
def list_rollouts(
    rollout_id: Annotated[str | None, typer.Argument(help="Show one rollout's devices.")] = None,
    state: Annotated[str | None, typer.Option()] = None, limit: int = 20,
) -> None:
    """List rollouts, or show one rollout's devices wave by wave."""
    with db_session(write=False) as session:
        if rollout_id is None:
            for rollout in service.list_rollouts(session=session, state=state, limit=limit):
                _print_rollout(service.rollout_read(session, rollout))
            return
        _print_rollout(service.rollout_read(session, service.get_rollout(session=session, rollout_id=rollout_id)))
        table = Table("wave", "device", "state", "sequence", "reason")
        for target in service.list_targets(session=session, rollout_id=rollout_id):
            table.add_row(str(target.wave), target.device_id, target.state, str(target.sequence or ""),
                          target.reason or "")
    console.print(table)


@fleet_app.command("decision")
def decision(
    device_id: str,
    at: Annotated[str | None, typer.Option(help="ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z "
                                                "(default: now).")] = None,
    output: Annotated[CardFormat, typer.Option("--format", help="markdown or json")] = CardFormat.MARKDOWN,
) -> None:
    """Which model decided this? The model, artifact, manifest and rollout active on a device at a time."""
    from control_plane.governance import decisions
    from control_plane.governance.markdown import decision_markdown

    try:
        moment = datetime.fromisoformat(at) if at is not None else None
    except ValueError as exc:
        raise typer.BadParameter(f"{at!r} is not an ISO 8601 time", param_hint="--at") from exc
    with db_session(write=False) as session:
        record = decisions.lookup(session=session, device_id=device_id, at=moment)
    typer.echo(decision_markdown(record) if output == CardFormat.MARKDOWN
               else record.model_dump_json(by_alias=True, indent=2))


@fleet_app.command("pause")
def pause(rollout_id: str, reason: ReasonOption = "") -> None:
    """Stop opening new waves."""
    with db_session() as session:
        _print_rollout(service.rollout_read(session, rollouts.pause(session, rollout_id, CLI_ACTOR, reason)))


@fleet_app.command("resume")
def resume(rollout_id: str, reason: ReasonOption = "") -> None:
    """Continue a paused rollout."""
    factory = _factory()
    with db_session() as session:
        _print_rollout(service.rollout_read(session, rollouts.resume(session, factory, rollout_id, CLI_ACTOR,
                                                                     reason)))


@fleet_app.command("abort")
def abort(rollout_id: str, reason: ReasonOption = "") -> None:
    """Stop a rollout for good (devices that had not confirmed it go back to their previous model)."""
    factory = _factory()
    with db_session() as session:
        _print_rollout(service.rollout_read(session, rollouts.abort(session, factory, rollout_id, CLI_ACTOR,
                                                                    reason)))


@fleet_app.command("rollback")
def rollback(rollout_id: str, reason: ReasonOption = "",
             waves: Annotated[str | None, typer.Option(help="Percent waves; default all at once.")] = None) -> None:
    """Return the devices a rollout reached to their previous model (new, higher-sequence manifests)."""
    strategy = Strategy(kind=StrategyKind.WAVES, waves=[float(w) for w in waves.split(",")]) if waves else Strategy()
    factory = _factory()
    with db_session() as session:
        _print_rollout(service.rollout_read(session, rollouts.rollback(session, factory, rollout_id, strategy,
                                                                       CLI_ACTOR, reason)))


@fleet_app.command("cutover")
def cutover(
    rollout_id: str,
    to: Annotated[str, typer.Option(help="new (cut over) or old (switch back).")] = "new",
    at: Annotated[str | None, typer.Option(help="ISO time to switch at (default: now).")] = None,
    reason: ReasonOption = "",
) -> None:
    """Switch a staged blue-green group with one signed command; prints staged/switched counts."""
    from datetime import datetime

    from control_plane.fleet import bluegreen
    from control_plane.fleet.schemas import CutoverRequest

    request = CutoverRequest(to=to, at=datetime.fromisoformat(at) if at else None, reason=reason)
    factory = _factory()
    with db_session() as session:
        bluegreen.issue_cutover(session, factory, rollout_id, request, CLI_ACTOR)
        console.print_json(bluegreen.report(session, rollout_id).model_dump_json())


@fleet_app.command("acl")
def acl(output: Annotated[Path | None, typer.Option("--output", "-o")] = None) -> None:
    """Write a mosquitto ACL file that confines each device to its own topics."""
    with db_session(write=False) as session:
        text = mosquitto_acl(d.id for d in service.list_devices(session=session, limit=10_000_000))
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        console.print(f"ACL written to {output}")


def provision_fleet(*, count: int, prefix: str, group: str,
                    factory: ManifestFactory) -> dict[str, service.DeviceSecrets]:
    """Provision (or re-token) ``count`` simulated devices and return {device_id: (token, broker password)}."""
    secrets: dict[str, service.DeviceSecrets] = {}
    with db_session(factory.settings) as session:
        for index in range(count):
            device_id = f"{prefix}{index:05d}"
            try:
                service.get_device(session=session, device_id=device_id)
                _, secrets[device_id] = service.rotate_token(session=session, device_id=device_id, actor=CLI_ACTOR)
            except NotFound:
                _, secrets[device_id] = service.provision_device(
                    session=session, actor=CLI_ACTOR, request=DeviceCreate(id=device_id, group=group))
    return secrets


@fleet_app.command("simulate")
def simulate(
    devices_count: Annotated[int, typer.Option("--devices", help="How many devices to simulate.")] = 10,
    prefix: str = "sim-", group: str = "sim", duration: float = 60.0, workers: int = 4,
    state_root: Annotated[Path | None, typer.Option(help="Default: <EDGELOOP_DATA_DIR>/sim.")] = None,
) -> None:
    """Provision N devices and run them with the edge agent's simulator (one process, real MQTT and HTTP)."""
    from dataclasses import replace

    from edge_agent.config import EdgeConfig
    from edge_agent.simulator import Fleet

    factory = _factory()
    settings = factory.settings
    state_root = state_root or settings.data_dir / "sim"
    broker = settings.mqtt_public_url or settings.mqtt_url
    if not broker:
        raise typer.BadParameter("set EDGELOOP_MQTT_URL (or EDGELOOP_MQTT_PUBLIC_URL)")
    secrets = provision_fleet(count=devices_count, prefix=prefix, group=group, factory=factory)
    template = EdgeConfig(device_id="template", device_token="", broker_url=broker,
                          control_plane_url=settings.base_url, state_dir=state_root,
                          trusted_public_key=factory.signer.public_b64, broker_ca_file=settings.mqtt_ca_file)
    # Each simulated device logs in to the broker as itself, with its own password (the ACL confines it).
    configs = [replace(template, device_id=d, device_token=s.token, broker_username=d,
                       broker_password=s.broker_password, state_dir=state_root / d) for d, s in secrets.items()]
    fleet = Fleet(configs, shared_root=state_root / "_shared", workers=workers)
    fleet.start()
    console.print(f"simulating {devices_count} devices in group {group!r} for {duration:.0f}s; "
                  f"deploy with: edgeloop fleet deploy MODEL --version N --group {group}")
    stop = threading.Event()
    try:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and not stop.wait(5):
            console.print(json.dumps(fleet.snapshot()), highlight=False)
    except KeyboardInterrupt:
        pass
    finally:
        report = fleet.snapshot()
        fleet.stop()
    console.print_json(json.dumps(report))

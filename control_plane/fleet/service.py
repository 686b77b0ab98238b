"""Devices (provisioning, groups, labels, desired vs reported state) and deployments."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.approvals.models import DeviceQuarantine
from control_plane.audit import service as audit
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import Principal, TokenCreate
from control_plane.db.base import utcnow
from control_plane.errors import Conflict, Forbidden, Invalid, NotFound
from control_plane.fleet import rollouts
from control_plane.fleet.manifests import CLEARED_ENVELOPE, ManifestFactory
from control_plane.fleet.models import Deployment, Device, DeviceEvent, Manifest, Rollout, RolloutTarget
from control_plane.fleet.policy import ProtectedFleet, check_deployment, check_device_change
from control_plane.fleet.schemas import (
    DeploymentCreate,
    DeviceCreate,
    DeviceProvisioned,
    DeviceRead,
    DeviceUpdate,
    RolloutProgress,
    RolloutRead,
    RolloutState,
    Selector,
    StrategyKind,
)
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.mqtt.auth_files import mosquitto_hash, new_password
from control_plane.mqtt.topics import PREFIX
from control_plane.registry import artifacts as registry_artifacts
from control_plane.registry import service as registry
from control_plane.registry.models import Artifact, ModelVersion


class DeviceSecrets(NamedTuple):
    """The one-time secrets of a device: its API token and its MQTT broker password (username = device id)."""

    token: str
    broker_password: str


def _issue_token(session: Session, device_id: str, actor: str) -> tuple[str, str]:
    token, plaintext = auth_service.create_token(
        session=session, actor=actor, request=TokenCreate(name=f"device-{device_id}"[:200], role=Role.DEVICE,
                                                          device_id=device_id))
    return token.id, plaintext


def _issue_secrets(session: Session, device: Device, actor: str) -> DeviceSecrets:
    """Issue a new API token and broker password; only their hashes are kept (the bridge rewrites the broker's
    password file from these rows and reloads it)."""
    device.token_id, token = _issue_token(session, device.id, actor)
    broker_password = new_password()
    device.broker_password_hash = mosquitto_hash(broker_password)
    device.broker_credentials_at = utcnow()
    session.flush()
    return DeviceSecrets(token, broker_password)


def provisioned(device: Device, secrets: DeviceSecrets, factory: ManifestFactory) -> DeviceProvisioned:
    """Present a device with everything its agent needs (the token and broker password appear only here)."""
    settings = factory.settings
    broker = settings.mqtt_public_url or settings.mqtt_url
    token = secrets.token
    edge_config = {"device_id": device.id, "device_token": token, "broker_url": broker,
                   "broker_username": device.id, "broker_password": secrets.broker_password,
                   "control_plane_url": settings.base_url, "trusted_public_key": factory.signer.public_b64}
    return DeviceProvisioned(**device_read(device).model_dump(), token=token,
                             trusted_public_key=factory.signer.public_b64, key_id=factory.signer.key_id,
                             broker_url=broker, control_plane_url=settings.base_url,
                             topic_prefix=f"{PREFIX}/{device.id}/",
                             edge_config=edge_config)


def provision_device(*, session: Session, request: DeviceCreate, actor: str) -> tuple[Device, DeviceSecrets]:
    """Register a device and issue its device-scoped token and broker password; return it with both, once."""
    if session.get(Device, request.id) is not None:
        raise Conflict(f"device {request.id!r} already exists; rotate its token instead")
    device = Device(id=request.id, name=request.name, group_name=request.group, labels=request.labels,
                    sequence=0, online=False, created_by=actor)
    session.add(device)
    session.flush()
    secrets = _issue_secrets(session, device, actor)
    audit.record(session, actor=actor, action="device.provision", resource=("device", device.id),
                 data={"group": device.group_name, "labels": device.labels, "token_id": device.token_id})
    return device, secrets


def rotate_token(*, session: Session, device_id: str, actor: str) -> tuple[Device, DeviceSecrets]:
    """Revoke the device's token and broker password and issue new ones (re-provisioning)."""
    device = get_device(session=session, device_id=device_id, lock=True)
    if device.token_id:
        auth_service.revoke_token(session=session, token_id=device.token_id, actor=actor)
    secrets = _issue_secrets(session, device, actor)
    audit.record(session, actor=actor, action="device.rotate_token", resource=("device", device.id),
                 data={"token_id": device.token_id, "broker_password": "rotated"})
    return device, secrets


def get_device(*, session: Session, device_id: str, lock: bool = False) -> Device:
    """Return a device or raise NotFound."""
    query = select(Device).where(Device.id == device_id)
    device = session.scalar(query.with_for_update() if lock else query)
    if device is None:
        raise NotFound(f"device {device_id!r} not found")
    return device


def update_device(*, session: Session, device_id: str, request: DeviceUpdate, actor: str,
                  principal: Principal | None = None, policy: ProtectedFleet | None = None) -> Device:
    """Change a device's name, group or labels (in or out of the protected set only with an approver)."""
    device = get_device(session=session, device_id=device_id, lock=True)
    changes = request.model_dump(exclude_unset=True)
    if principal is not None and policy is not None:
        group = changes.get("group", device.group_name)
        labels = changes["labels"] if changes.get("labels") is not None else device.labels
        check_device_change(policy, principal, device, group, labels)
    if "name" in changes and changes["name"] is not None:
        device.name = changes["name"]
    if "group" in changes:
        device.group_name = changes["group"]
    if "labels" in changes and changes["labels"] is not None:
        device.labels = changes["labels"]
    session.flush()
    audit.record(session, actor=actor, action="device.update", resource=("device", device.id), data=changes)
    return device


def list_devices(*, session: Session, group: str | None = None, labels: dict[str, str] | None = None,
                 online: bool | None = None, limit: int = 1000, offset: int = 0) -> list[Device]:
    """Return devices by id, filtered by group, labels and presence."""
    query = select(Device).order_by(Device.id)
    if group is not None:
        query = query.where(Device.group_name == group)
    if online is not None:
        query = query.where(Device.online.is_(online))
    devices = list(session.scalars(query))
    if labels:
        devices = [d for d in devices if all(d.labels.get(k) == v for k, v in labels.items())]
    return devices[offset:offset + limit]


def resolve_selector(*, session: Session, selector: Selector) -> list[Device]:
    """Return the devices matching every given criterion, ordered by id (the wave order)."""
    query = select(Device).order_by(Device.id)
    if selector.device_ids is not None:
        query = query.where(Device.id.in_(selector.device_ids))
    if selector.group is not None:
        query = query.where(Device.group_name == selector.group)
    devices = list(session.scalars(query))
    if selector.device_ids is not None:
        missing = set(selector.device_ids) - {d.id for d in devices}
        if missing and selector.group is None and not selector.labels:
            raise NotFound(f"unknown devices: {sorted(missing)[:10]}")
    if selector.labels:
        devices = [d for d in devices if all(d.labels.get(k) == v for k, v in selector.labels.items())]
    # Quarantined devices (an approved device.quarantine) get no new rollouts until released.
    quarantined = set(session.scalars(select(DeviceQuarantine.device_id)))
    return [d for d in devices if d.id not in quarantined] if quarantined else devices


def device_read(device: Device) -> DeviceRead:
    """Present a device with its desired and reported state side by side."""
    return DeviceRead(
        id=device.id, name=device.name, group=device.group_name, labels=device.labels, sequence=device.sequence,
        desired={"rollout_id": device.desired_rollout_id, "artifact_id": device.desired_artifact_id,
                 "sequence": device.desired_sequence},
        reported={"model": device.reported_model, "slot": device.reported_slot, "state": device.reported_state,
                  "reason": device.reported_reason, "sequence": device.reported_sequence,
                  "active_artifact_id": device.active_artifact_id},
        online=device.online, last_seen=device.last_seen, created_at=device.created_at,
    )


def _resolve_version(session: Session, request: DeploymentCreate) -> ModelVersion:
    if request.alias is not None:
        return registry.resolve_alias(session=session, model_name=request.model, alias=request.alias)
    assert request.version is not None
    return registry.get_version(session=session, model_name=request.model, version=request.version)


def create_deployment(*, session: Session, factory: ManifestFactory, request: DeploymentCreate,
                      actor: str, principal: Principal | None = None, policy: ProtectedFleet | None = None) -> Rollout:
    """Deploy a model version to the selected devices: record the intent, plan waves, start the rollout.

    With a ``principal`` and ``policy`` (the API), protected devices get only the protected alias's version unless
    the caller may approve; without (the local CLI, which holds the database anyway) no policy applies.
    """
    if request.strategy.kind == StrategyKind.AB:
        from control_plane.fleet import abtest  # abtest builds on this module

        return abtest.create_experiment(session=session, factory=factory, request=request, actor=actor,
                                        principal=principal, policy=policy)
    version = _resolve_version(session, request)
    artifact = registry_artifacts.pick_artifact(model_version=version, quantization=request.quantization)
    devices = resolve_selector(session=session, selector=request.selector)
    if not devices:
        raise Invalid("the selector matches no device")
    if principal is not None and policy is not None:
        check_deployment(session, policy, principal, version, devices)
    factory.template(session, version=version, artifact=artifact)  # Fail now if the artifact cannot run.
    strategy = request.strategy.model_dump(mode="json")
    if request.max_latency_ms is not None:
        strategy["max_latency_ms"] = request.max_latency_ms
    deployment = Deployment(model_version_id=version.id, artifact_id=artifact.id,
                            selector=request.selector.model_dump(mode="json", exclude_none=True),
                            strategy=strategy, created_by=actor)
    session.add(deployment)
    session.flush()
    now = utcnow()
    kind = "shadow" if request.strategy.kind == StrategyKind.SHADOW else "deploy"
    rollout = Rollout(deployment_id=deployment.id, kind=kind, state=RolloutState.PENDING.value,
                      wave_plan=rollouts.wave_plan(request.strategy, len(devices)),
                      failure_threshold=request.strategy.failure_threshold,
                      min_finished=request.strategy.min_finished, wave_timeout_s=request.strategy.wave_timeout_s,
                      created_by=actor, updated_at=now)
    session.add(rollout)
    session.flush()
    rollouts.add_targets(session, rollout, [(d.id, artifact.id, d.active_artifact_id) for d in devices])
    rollouts.cancel_superseded(session, [d.id for d in devices], rollout.id, now)
    lineage.link(session, (NodeKind.ARTIFACT, artifact.id), (NodeKind.DEPLOYMENT, deployment.id), "deployed_as")
    lineage.link(session, (NodeKind.DEPLOYMENT, deployment.id), (NodeKind.ROLLOUT, rollout.id), "executed_by")
    audit.record(session, actor=actor, action="deployment.create", resource=("deployment", deployment.id),
                 data={"model": version.model.name, "version": version.version, "artifact_id": artifact.id,
                       "sha256": artifact.sha256, "quantization": artifact.quantization,
                       "selector": deployment.selector, "devices": len(devices)})
    audit.record(session, actor=actor, action="rollout.create", resource=("rollout", rollout.id),
                 data={"kind": kind, "deployment_id": deployment.id, "wave_plan": rollout.wave_plan,
                       "strategy": strategy})
    return rollouts.step(session, factory, rollout.id, now)


def get_deployment(*, session: Session, deployment_id: str) -> Deployment:
    """Return a deployment or raise NotFound."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise NotFound(f"deployment {deployment_id!r} not found")
    return deployment


def get_rollout(*, session: Session, rollout_id: str) -> Rollout:
    """Return a rollout or raise NotFound."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} not found")
    return rollout


def list_rollouts(*, session: Session, state: str | None = None, limit: int = 100) -> list[Rollout]:
    """Return rollouts, newest first."""
    query = select(Rollout).order_by(Rollout.created_at.desc()).limit(limit)
    return list(session.scalars(query.where(Rollout.state == state) if state else query))


def list_targets(*, session: Session, rollout_id: str) -> list[RolloutTarget]:
    """Return a rollout's devices in wave order."""
    get_rollout(session=session, rollout_id=rollout_id)
    return list(session.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == rollout_id)
                                .order_by(RolloutTarget.position)))


def rollout_read(session: Session, rollout: Rollout) -> RolloutRead:
    """Present a rollout with its model and per-state progress."""
    deployment = get_deployment(session=session, deployment_id=rollout.deployment_id)
    counts = rollouts.target_counts(session, rollout.id)
    _, failed, finished = rollouts.health(counts, rollout.failure_threshold, rollout.min_finished)
    artifact_ids = session.scalars(select(RolloutTarget.artifact_id).where(RolloutTarget.rollout_id == rollout.id)
                                   .limit(1))
    artifact = session.get(Artifact, next(iter(artifact_ids), deployment.artifact_id))
    assert artifact is not None
    version = artifact.model_version
    return RolloutRead(
        id=rollout.id, deployment_id=rollout.deployment_id, kind=rollout.kind, rollback_of=rollout.rollback_of,
        state=RolloutState(rollout.state), model={"name": version.model.name, "version": version.version},
        artifact_sha256=artifact.sha256, wave_plan=rollout.wave_plan, current_wave=rollout.current_wave,
        failure_threshold=rollout.failure_threshold, min_finished=rollout.min_finished,
        wave_timeout_s=rollout.wave_timeout_s, reason=rollout.reason, created_by=rollout.created_by,
        created_at=rollout.created_at, finished_at=rollout.finished_at,
        progress=RolloutProgress(total=sum(counts.values()), by_state=dict(counts),
                                 issued=sum(counts.values()) - counts["pending"],
                                 succeeded=counts["activated"] + counts["staged"],
                                 failed=failed, finished=finished),
    )


def latest_manifest(*, session: Session, device_id: str) -> Manifest:
    """Return the newest signed manifest issued to a device."""
    get_device(session=session, device_id=device_id)
    manifest = session.scalar(select(Manifest).where(Manifest.device_id == device_id)
                              .order_by(Manifest.sequence.desc()).limit(1))
    if manifest is None:
        raise NotFound(f"no manifest was issued to device {device_id!r}")
    if manifest.envelope == CLEARED_ENVELOPE:
        raise NotFound(f"device {device_id!r} has no current manifest: it was withdrawn when its rollout was aborted")
    return manifest


def require_manifest_for(*, session: Session, device_id: str | None, sha256: str) -> None:
    """Refuse a device download of an artifact no manifest of that device references."""
    found = session.scalar(select(func.count()).select_from(Manifest)
                           .where(Manifest.device_id == device_id, Manifest.artifact_sha256 == sha256))
    if not found:
        raise Forbidden("no manifest issued to this device references that artifact")


def list_events(*, session: Session, device_id: str | None = None, accepted: bool | None = None,
                limit: int = 100) -> list[DeviceEvent]:
    """Return received device events, newest first (malformed ones carry their reason)."""
    query = select(DeviceEvent).order_by(DeviceEvent.id.desc()).limit(limit)
    if device_id is not None:
        query = query.where(DeviceEvent.device_id == device_id)
    if accepted is not None:
        query = query.where(DeviceEvent.accepted.is_(accepted))
    return list(session.scalars(query))

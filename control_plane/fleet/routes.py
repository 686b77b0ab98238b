"""Fleet routes: devices, deployments, rollouts, device events, the manifest key and the broker ACL."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import PlainTextResponse
from pydantic import Field

from control_plane.auth.roles import Role
from control_plane.constraints import Label, Name, ParamNonNegativeInt64
from control_plane.deps import (
    Admin,
    Approver,
    Reader,
    ReaderOrDevice,
    SessionDep,
    SettingsDep,
    Writer,
    require_device,
)
from control_plane.fleet import bluegreen, rollouts, service, shadow
from control_plane.fleet.acl import mosquitto_acl
from control_plane.fleet.manifests import ManifestFactory, factory_for
from control_plane.fleet.policy import ProtectedFleet
from control_plane.fleet.schemas import (
    BlueGreenRead,
    CutoverRequest,
    DeploymentCreate,
    DeviceCreate,
    DeviceEventRead,
    DeviceProvisioned,
    DeviceRead,
    DeviceUpdate,
    ManifestEnvelope,
    RollbackRequest,
    RolloutAction,
    RolloutRead,
    RolloutTargetRead,
    ShadowReportRead,
    SigningKeyRead,
)

router = APIRouter(prefix="/fleet", tags=["fleet"])
Limit = Annotated[int, Query(ge=1, le=10_000)]


def manifest_factory(request: Request) -> ManifestFactory:
    """Return this app's manifest factory (signing key + self-test cache)."""
    return factory_for(request.app.state)


def _parse_labels(label: list[str] | None) -> dict[str, str] | None:
    return dict(item.split("=", 1) for item in label if "=" in item) if label else None


@router.post("/devices", status_code=status.HTTP_201_CREATED, response_model=DeviceProvisioned)
def provision_device(body: DeviceCreate, request: Request, session: SessionDep, caller: Writer) -> DeviceProvisioned:
    """Provision a device: its device-scoped token (shown once), trusted key, broker URL and topic prefix."""
    device, secrets = service.provision_device(session=session, request=body, actor=caller.actor)
    return service.provisioned(device, secrets, manifest_factory(request))


@router.get("/devices", response_model=list[DeviceRead])
def list_devices(
    session: SessionDep, _: Reader, group: Name | None = None,
    label: Annotated[list[Annotated[str, Field(max_length=301)]] | None,
                     Query(description="key=value, repeatable", max_length=100)] = None,
    online: bool | None = None, limit: Limit = 1000, offset: ParamNonNegativeInt64 = 0,
) -> list[DeviceRead]:
    """List devices with desired and reported state."""
    devices = service.list_devices(session=session, group=group, labels=_parse_labels(label), online=online,
                                   limit=limit, offset=offset)
    return [service.device_read(d) for d in devices]


@router.get("/devices/{device_id}", response_model=DeviceRead)
def get_device(device_id: Name, session: SessionDep, caller: ReaderOrDevice) -> DeviceRead:
    """Return one device (a device token may read only its own)."""
    if caller.role == Role.DEVICE:
        require_device(caller, device_id)
    return service.device_read(service.get_device(session=session, device_id=device_id))


@router.patch("/devices/{device_id}", response_model=DeviceRead)
def update_device(device_id: Name, body: DeviceUpdate, session: SessionDep, settings: SettingsDep, caller: Writer
                  ) -> DeviceRead:
    """Change a device's name, group or labels (into or out of the protected set: approvers only)."""
    return service.device_read(service.update_device(session=session, device_id=device_id, request=body,
                                                     actor=caller.actor, principal=caller,
                                                     policy=ProtectedFleet.from_settings(settings)))


@router.post("/devices/{device_id}/token", response_model=DeviceProvisioned)
def rotate_device_token(device_id: Name, request: Request, session: SessionDep, caller: Admin) -> DeviceProvisioned:
    """Revoke the device's token and issue a new one (admins only: whoever receives it can act as the device)."""
    device, secrets = service.rotate_token(session=session, device_id=device_id, actor=caller.actor)
    return service.provisioned(device, secrets, manifest_factory(request))


@router.get("/devices/{device_id}/manifest", response_model=ManifestEnvelope)
def get_device_manifest(device_id: Name, session: SessionDep, caller: ReaderOrDevice) -> ManifestEnvelope:
    """Return the newest signed manifest of a device (HTTP fallback to the retained MQTT message)."""
    if caller.role == Role.DEVICE:
        require_device(caller, device_id)
    manifest = service.latest_manifest(session=session, device_id=device_id)
    return ManifestEnvelope.model_validate(json.loads(manifest.envelope))


@router.get("/devices/{device_id}/events", response_model=list[DeviceEventRead])
def list_device_events(device_id: Name, session: SessionDep, _: Reader, limit: Limit = 100) -> list[DeviceEventRead]:
    """Return a device's received status events, newest first."""
    return [DeviceEventRead.model_validate(e) for e in service.list_events(session=session, device_id=device_id,
                                                                           limit=limit)]


@router.get("/events", response_model=list[DeviceEventRead])
def list_events(session: SessionDep, _: Reader, accepted: bool | None = None, limit: Limit = 100
                ) -> list[DeviceEventRead]:
    """Return received device events; `accepted=false` lists malformed ones with the reason."""
    return [DeviceEventRead.model_validate(e) for e in service.list_events(session=session, accepted=accepted,
                                                                           limit=limit)]


@router.get("/signing-key", response_model=SigningKeyRead)
def signing_key(request: Request, _: ReaderOrDevice) -> SigningKeyRead:
    """Return the public key devices verify manifests with."""
    signer = manifest_factory(request).signer
    return SigningKeyRead(key_id=signer.key_id, public_key=signer.public_b64)


@router.get("/acl", response_class=PlainTextResponse)
def broker_acl(session: SessionDep, _: Admin) -> str:
    """Return a mosquitto ACL file giving each device access to its own topics only."""
    return mosquitto_acl(d.id for d in service.list_devices(session=session, limit=1_000_000))


@router.post("/deployments", status_code=status.HTTP_201_CREATED, response_model=RolloutRead)
def create_deployment(body: DeploymentCreate, request: Request, session: SessionDep, settings: SettingsDep,
                      caller: Writer) -> RolloutRead:
    """Deploy a model version (by number or alias) to the selected devices; returns the started rollout.

    Protected devices (default: labelled env=production) get only the version the protected alias names, unless
    the caller is an approver.
    """
    rollout = service.create_deployment(session=session, factory=manifest_factory(request), request=body,
                                        actor=caller.actor, principal=caller,
                                        policy=ProtectedFleet.from_settings(settings))
    return service.rollout_read(session, rollout)


@router.get("/rollouts", response_model=list[RolloutRead])
def list_rollouts(session: SessionDep, _: Reader, state: Label | None = None, limit: Limit = 100) -> list[RolloutRead]:
    """List rollouts, newest first."""
    return [service.rollout_read(session, r) for r in service.list_rollouts(session=session, state=state,
                                                                            limit=limit)]


@router.get("/rollouts/{rollout_id}", response_model=RolloutRead)
def get_rollout(rollout_id: Name, session: SessionDep, _: Reader) -> RolloutRead:
    """Return a rollout with its progress."""
    return service.rollout_read(session, service.get_rollout(session=session, rollout_id=rollout_id))


@router.get("/rollouts/{rollout_id}/devices", response_model=list[RolloutTargetRead])
def list_rollout_devices(rollout_id: Name, session: SessionDep, _: Reader) -> list[RolloutTargetRead]:
    """Return a rollout's devices in wave order with their state."""
    return [RolloutTargetRead.model_validate(t) for t in service.list_targets(session=session,
                                                                              rollout_id=rollout_id)]


@router.post("/rollouts/{rollout_id}/cutover", status_code=status.HTTP_202_ACCEPTED, response_model=BlueGreenRead)
def cutover_rollout(rollout_id: Name, body: CutoverRequest, request: Request, session: SessionDep, caller: Writer
                    ) -> BlueGreenRead:
    """Switch a staged blue-green group to the new model (or back to the old one) with one signed command."""
    bluegreen.issue_cutover(session, manifest_factory(request), rollout_id, body, caller.actor)
    return bluegreen.report(session, rollout_id)


@router.get("/rollouts/{rollout_id}/bluegreen", response_model=BlueGreenRead)
def blue_green_report(rollout_id: Name, session: SessionDep, _: Reader) -> BlueGreenRead:
    """Return staged and switched counts of a blue-green rollout and what its devices serve."""
    return bluegreen.report(session, rollout_id)


@router.get("/rollouts/{rollout_id}/shadow", response_model=ShadowReportRead)
def shadow_report(rollout_id: Name, session: SessionDep, _: Reader, by_label: Label | None = None
                  ) -> ShadowReportRead:
    """Compare a shadow rollout's candidate with the active model per cohort (CIs) and show its promotion gate.

    Cohorts are device groups (what the gate judges); `by_label=KEY` shows the same comparison per label value.
    """
    return shadow.report(session, rollout_id, by_label=by_label)


@router.post("/rollouts/{rollout_id}/pause", response_model=RolloutRead)
def pause_rollout(rollout_id: Name, body: RolloutAction, session: SessionDep, caller: Writer) -> RolloutRead:
    """Stop opening new waves."""
    return service.rollout_read(session, rollouts.pause(session, rollout_id, caller.actor, body.reason))


@router.post("/rollouts/{rollout_id}/resume", response_model=RolloutRead)
def resume_rollout(rollout_id: Name, body: RolloutAction, request: Request, session: SessionDep, caller: Writer
                   ) -> RolloutRead:
    """Continue a paused rollout."""
    rollout = rollouts.resume(session, manifest_factory(request), rollout_id, caller.actor, body.reason)
    return service.rollout_read(session, rollout)


@router.post("/rollouts/{rollout_id}/abort", response_model=RolloutRead)
def abort_rollout(rollout_id: Name, body: RolloutAction, request: Request, session: SessionDep, caller: Writer
                  ) -> RolloutRead:
    """Stop the rollout for good; devices that had not confirmed it are sent back to their previous model."""
    rollout = rollouts.abort(session, manifest_factory(request), rollout_id, caller.actor, body.reason)
    return service.rollout_read(session, rollout)


@router.post("/rollouts/{rollout_id}/rollback", status_code=status.HTTP_201_CREATED, response_model=RolloutRead)
def rollback_rollout(rollout_id: Name, body: RollbackRequest, request: Request, session: SessionDep,
                     caller: Approver) -> RolloutRead:
    """Return the devices this rollout reached to their previous model (an approver's decision)."""
    rollout = rollouts.rollback(session, manifest_factory(request), rollout_id, body.strategy, caller.actor,
                                body.reason)
    return service.rollout_read(session, rollout)

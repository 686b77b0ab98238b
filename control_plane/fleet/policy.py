"""Protected devices: only the version the protected alias names, or an approver's decision, reaches them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.errors import Forbidden
from control_plane.fleet.models import Device
from control_plane.registry.models import ModelAlias, ModelVersion
from control_plane.registry.schemas import DEFAULT_PROTECTED_ALIASES
from control_plane.settings import Settings


@dataclass(frozen=True)
class ProtectedFleet:
    """Which devices are protected (all of ``labels``, or any of ``groups``) and the alias that pins their version."""

    labels: Mapping[str, str] = field(default_factory=lambda: {"env": "production"})
    groups: frozenset[str] = frozenset()
    alias: str = "production"

    @classmethod
    def from_settings(cls, settings: Settings) -> ProtectedFleet:
        """Build the policy from ``protected_device_labels``, ``protected_device_groups`` and ``protected_alias``."""
        return cls(labels=dict(settings.protected_device_labels), groups=frozenset(settings.protected_device_groups),
                   alias=settings.protected_alias)

    def protects(self, group: str | None, labels: Mapping[str, str]) -> bool:
        """Return whether a device in ``group`` with ``labels`` is protected."""
        if group is not None and group in self.groups:
            return True
        return bool(self.labels) and all(labels.get(key) == value for key, value in self.labels.items())

    def describe(self) -> str:
        """Say what the protected selector is, for error messages."""
        parts = [f"labels {dict(self.labels)}"] if self.labels else []
        parts += [f"groups {sorted(self.groups)}"] if self.groups else []
        return " or ".join(parts) or "nothing"


def _pinned_version(session: Session, model_id: str, alias: str) -> ModelVersion | None:
    """Return the version ``alias`` names, but only if the alias is protected (else an operator could move it)."""
    pointer = session.scalar(select(ModelAlias).where(ModelAlias.model_id == model_id, ModelAlias.alias == alias))
    if pointer is None or not (pointer.protected or alias in DEFAULT_PROTECTED_ALIASES):
        return None
    return session.get(ModelVersion, pointer.version_id)


def check_deployment(session: Session, policy: ProtectedFleet, principal: Principal, version: ModelVersion,
                     devices: Iterable[Device]) -> None:
    """Refuse a deployment that reaches protected devices with another version than the protected alias names."""
    if Scope.APPROVE in principal.scopes:
        return
    protected = [d.id for d in devices if policy.protects(d.group_name, d.labels)]
    if not protected:
        return
    pinned = _pinned_version(session, version.model_id, policy.alias)
    if pinned is not None and pinned.id == version.id:
        return
    named = f"names version {pinned.version}" if pinned is not None else "is not set (or not protected)"
    raise Forbidden(
        f"{len(protected)} selected device(s) are protected ({policy.describe()}; e.g. {protected[:3]}): only the "
        f"version the protected alias {policy.alias!r} names may be deployed to them without an approver, and it "
        f"{named}", required_scope=Scope.APPROVE.value, protected_devices=protected[:20])


def check_device_change(policy: ProtectedFleet, principal: Principal, device: Device, group: str | None,
                        labels: Mapping[str, str]) -> None:
    """Refuse moving a device into or out of the protected set without an approver (the way around the rule)."""
    if Scope.APPROVE in principal.scopes:
        return
    if policy.protects(device.group_name, device.labels) != policy.protects(group, labels):
        raise Forbidden(f"moving device {device.id!r} into or out of the protected set ({policy.describe()}) needs "
                        "an approver", required_scope=Scope.APPROVE.value)

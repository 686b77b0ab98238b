"""Keep the broker's password file and ACL in step with the device table, and reload the broker when they change."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.fleet.acl import mosquitto_acl
from control_plane.fleet.models import Device
from control_plane.mqtt.auth_files import (
    ACL_FILE,
    PASSWORD_FILE,
    mosquitto_hash,
    password_file,
    reload_broker,
    write_atomic,
)
from control_plane.settings import Settings

log = logging.getLogger(__name__)
# Characters mosquitto's password file or ACL patterns cannot carry in a user name.
_UNUSABLE = frozenset(":\n\r\x00+#/")


@dataclass
class BrokerAuthFiles:
    """The password file and ACL of a mosquitto the control plane manages (EDGELOOP_MQTT_AUTH_DIR).

    `sync()` is cheap when nothing changed (one aggregate query), so the bridge calls it on every step; a
    newly provisioned or re-keyed device can log in within a step plus the broker's reload.
    """

    directory: Path
    pid_file: Path | None
    control_plane_user: str
    control_plane_hash: str
    reloads: int = 0
    _fingerprint: tuple[Any, ...] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerAuthFiles | None:
        """Return the manager, or None when the control plane does not manage the broker's files."""
        if settings.mqtt_auth_dir is None:
            return None
        if not settings.mqtt_username or settings.mqtt_password is None:
            raise ValueError("EDGELOOP_MQTT_AUTH_DIR needs EDGELOOP_MQTT_USERNAME and EDGELOOP_MQTT_PASSWORD: the "
                             "control plane's own user goes into the password file it writes")
        return cls(settings.mqtt_auth_dir, settings.mqtt_broker_pid_file, settings.mqtt_username,
                   mosquitto_hash(settings.mqtt_password))

    def sync(self, session: Session, *, force: bool = False) -> bool:
        """Rewrite both files and reload the broker if any device's credentials changed; return whether it did."""
        with_password = Device.broker_password_hash.is_not(None)
        fingerprint = tuple(session.execute(select(func.count(), func.max(Device.broker_credentials_at))
                                            .where(with_password)).one())
        if fingerprint == self._fingerprint and not force:
            return False
        entries = [(self.control_plane_user, self.control_plane_hash)]
        device_ids = []
        for device_id, hashed in session.execute(select(Device.id, Device.broker_password_hash).where(with_password)
                                                 .order_by(Device.id)):
            if device_id == self.control_plane_user or _UNUSABLE & set(device_id):
                # A device named like the control plane's user would inherit its rights: never write it.
                log.error("device %r cannot have a broker login (reserved or unusable user name)", device_id)
                continue
            entries.append((device_id, str(hashed)))
            device_ids.append(device_id)
        write_atomic(self.directory / PASSWORD_FILE, password_file(entries))
        write_atomic(self.directory / ACL_FILE, mosquitto_acl(device_ids, self.control_plane_user))
        if reload_broker(self.pid_file):
            self.reloads += 1
        self._fingerprint = fingerprint
        log.info("broker password file and ACL written for %d devices", len(device_ids))
        return True

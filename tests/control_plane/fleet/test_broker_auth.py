"""Per-device broker logins: the hashes mosquitto accepts, the files the control plane writes, re-keying revokes."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.db.session import Database
from control_plane.fleet import service
from control_plane.fleet.broker_auth import BrokerAuthFiles
from control_plane.fleet.schemas import DeviceCreate
from control_plane.mqtt.auth_files import PASSWORD_FILE, mosquitto_hash, password_file, verify_hash
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.settings import Settings
from tests.control_plane.fleet.conftest import wait_for

pytestmark = pytest.mark.mqtt


def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    written = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(written), "dev", "s3cret:with colon"], check=True)
    hashed = written.read_text().strip().split(":", 1)[1]
    assert verify_hash("s3cret:with colon", hashed) and not verify_hash("s3cret", hashed)
    ours = mosquitto_hash("pw")
    assert ours.startswith("$7$101$") and verify_hash("pw", ours) and not verify_hash("pw", "$6$x$y")
    for bad in ("a:b", "a\nb", ""):
        with pytest.raises(ValueError):
            password_file([(bad, ours)])


def _login(broker: PrivateMosquitto, user: str, password: str) -> str | None:
    """Return None if the broker accepts the login, else its reason."""
    answer: list[str | None] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"login-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, code: mqtt.ReasonCode, _p: object) -> None:
        answer.append(str(code) if code.is_failure else None)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", broker.port, 30)
    client.loop_start()
    try:
        assert done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0]


@pytest.fixture
def managed_broker() -> Iterator[PrivateMosquitto]:
    broker = PrivateMosquitto(persistence=False)
    broker.start()
    yield broker
    broker.close()


def test_provisioning_and_rekeying_reach_the_running_broker(database: Database, settings: Settings,
                                                          managed_broker: PrivateMosquitto) -> None:
    for name, value in managed_broker.settings_overrides().items():
        setattr(settings, name, value)
    files = BrokerAuthFiles.from_settings(settings)
    assert files is not None
    with database.transaction() as session:
        _, first = service.provision_device(session=session, request=DeviceCreate(id="dev-1"), actor="test")
        _, reserved = service.provision_device(session=session, request=DeviceCreate(id="edgeloop-cp"),
                                               actor="test")
    with database.transaction(write=False) as session:
        assert files.sync(session) and not files.sync(session)  # a second look with no change writes nothing
    assert "edgeloop-cp:" in (managed_broker.workdir / PASSWORD_FILE).read_text()
    assert (managed_broker.workdir / PASSWORD_FILE).read_text().count("edgeloop-cp:") == 1  # never the device
    # SIGHUP is handled on the broker's next loop turn: poll for the reload, not a fixed delay.
    wait_for(lambda: _login(managed_broker, "dev-1", first.broker_password) is None, timeout=10)
    assert _login(managed_broker, "edgeloop-cp", reserved.broker_password) is not None
    assert _login(managed_broker, "dev-1", first.token) is not None  # the API token is not the broker password

    with database.transaction() as session:
        _, second = service.rotate_token(session=session, device_id="dev-1", actor="test")
    with database.transaction(write=False) as session:
        assert files.sync(session)
    assert files.reloads == 2
    wait_for(lambda: _login(managed_broker, "dev-1", first.broker_password) is not None, timeout=10)
    assert _login(managed_broker, "dev-1", second.broker_password) is None
    assert _login(managed_broker, managed_broker.control_plane_user, managed_broker.control_plane_password) is None

"""docker-compose.yml's topology as real processes: two `edgeloop serve` replicas on one PostgreSQL database,
each with one telemetry consumer on a shared subscription of one authenticated mosquitto.

Every `edgeloop` service of the compose file runs with the file's command and environment verbatim, except the
addresses, secrets and data dirs in LOCAL_OVERRIDES, so the file describes what this test ran.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.session import Database
from control_plane.mqtt.broker import PrivateMosquitto, free_port
from control_plane.mqtt.topics import device_topic
from control_plane.telemetry.models import QuarantinedMessage
from tests.conftest import scratch_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # slow: two server starts and one broker

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EDGELOOP = str(Path(sys.executable).parent / "edgeloop")
# Only these differ between the containers and this machine; every other setting is the compose file's.
LOCAL_OVERRIDES = frozenset({
    "EDGELOOP_DATABASE_URL", "EDGELOOP_MQTT_URL", "EDGELOOP_MQTT_PASSWORD", "EDGELOOP_KEY_ENCRYPTION_KEY",
    "EDGELOOP_METRICS_TOKEN", "EDGELOOP_PUBLIC_URL", "EDGELOOP_HOST", "EDGELOOP_PORT", "EDGELOOP_DATA_DIR",
    "EDGELOOP_MQTT_AUTH_DIR", "EDGELOOP_MQTT_BROKER_PID_FILE",
})
MESSAGES = 200


@dataclass
class Service:
    """One compose service run as a local process."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


def edgeloop_services() -> dict[str, dict[str, Any]]:
    """Return the compose file's services that run an `edgeloop` command."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {name: spec for name, spec in services.items() if spec.get("command", [None])[0] == "edgeloop"}


def test_the_compose_file_names_only_known_local_differences() -> None:
    services = edgeloop_services()
    assert sorted(services) == ["api-1", "api-2"]
    for name, spec in services.items():
        interpolated = {key for key, value in spec["environment"].items() if "${" in str(value)}
        assert interpolated <= LOCAL_OVERRIDES, (name, interpolated - LOCAL_OVERRIDES)
        assert all(key.startswith("EDGELOOP_") for key in spec["environment"]), name
    # Exactly one replica manages the broker's password file; both consume telemetry.
    assert ["EDGELOOP_MQTT_AUTH_DIR" in s["environment"] for s in services.values()] == [True, False]
    assert {s["environment"]["EDGELOOP_TELEMETRY_CONSUMERS"] for s in services.values()} == {"1"}
    # Found by running them on one host: two consumers with one client id took the session from each other.
    prefixes = [s["environment"]["EDGELOOP_TELEMETRY_CLIENT_ID_PREFIX"] for s in services.values()]
    assert len(set(prefixes)) == len(prefixes)


def local_environment(spec: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    """The compose service's environment with this machine's addresses; no EDGELOOP_* leaks in from the caller."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGELOOP_")}
    env.update({key: str(value) for key, value in spec["environment"].items()})
    env.update({key: value for key, value in overrides.items() if key in spec["environment"]})
    return env


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def ready(service: Service) -> bool:
    if service.process.poll() is not None:
        pytest.fail(f"{service.name} exited {service.process.returncode}: {service.log.read_text()[-3000:]}")
    try:
        response = httpx.get(f"{service.base_url}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["checks"] == {"database": "ok", "broker": "ok"}


@dataclass
class Topology:
    services: list[Service]
    database_url: str
    broker: PrivateMosquitto
    secrets: dict[str, str]


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    broker = PrivateMosquitto(persistence=False).start()
    started: list[Service] = []
    try:
        with scratch_postgres_database("edgeloop_compose") as database_url:
            services = edgeloop_services()
            assert services["api-1"]["environment"]["EDGELOOP_MQTT_USERNAME"] == broker.control_plane_user
            shared = {"EDGELOOP_DATABASE_URL": database_url, "EDGELOOP_MQTT_URL": broker.url,
                      "EDGELOOP_MQTT_PASSWORD": broker.control_plane_password,
                      "EDGELOOP_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
                      "EDGELOOP_METRICS_TOKEN": secrets.token_urlsafe(24), "EDGELOOP_HOST": "127.0.0.1",
                      "EDGELOOP_MQTT_AUTH_DIR": str(broker.workdir),
                      "EDGELOOP_MQTT_BROKER_PID_FILE": str(broker.pid_file)}
            for name, spec in services.items():
                port = free_port()
                overrides = {**shared, "EDGELOOP_PORT": str(port), "EDGELOOP_DATA_DIR": str(tmp_path / name),
                             "EDGELOOP_PUBLIC_URL": f"http://127.0.0.1:{port}"}
                log = tmp_path / f"{name}.log"
                with log.open("wb") as out:
                    process = subprocess.Popen([EDGELOOP, *spec["command"][1:]], env=local_environment(spec, overrides),
                                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                started.append(Service(name, process, f"http://127.0.0.1:{port}", log))
            for service in started:
                wait_until(lambda service=service: ready(service), f"{service.name} /readyz")  # type: ignore[misc]
            yield Topology(started, database_url, broker, shared)
            stop(started)
    finally:
        stop(started)
        broker.close()


def stop(services: list[Service]) -> None:
    for service in services:
        if service.process.poll() is None:
            os.killpg(service.process.pid, signal.SIGTERM)
    for service in services:
        try:
            service.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()


def metric_sum(text: str, name: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def device_login(broker: PrivateMosquitto, device_id: str, password: str) -> mqtt.Client | None:
    """Connect as the device; None while the broker does not know it yet."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(device_id, password)
    try:
        client.connect("127.0.0.1", broker.port)
    except OSError:
        return None
    client.loop_start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not client.is_connected():
        time.sleep(0.05)
    if client.is_connected():
        return client
    client.loop_stop()
    client.disconnect()
    return None


def test_the_compose_topology_serves_splits_telemetry_and_logs_json(topology: Topology) -> None:
    api_1, api_2 = topology.services
    database = Database(topology.database_url)
    with database.transaction() as session:
        _, admin = auth_service.create_token(session=session, actor="admin:test",
                                             request=TokenCreate(name="compose-test", role=Role.ADMIN))
    database.dispose()
    headers = {"Authorization": f"Bearer {admin}"}
    # Provisioned through the replica that does not manage the broker: api-1 picks the new login up from the database.
    response = httpx.post(f"{api_2.base_url}/api/v1/fleet/devices", headers=headers, timeout=30,
                          json={"id": "compose-dev-1"})
    assert response.status_code == 201, response.text
    provisioned = response.json()
    password = provisioned["edge_config"]["broker_password"]
    clients: list[mqtt.Client] = []
    wait_until(lambda: bool(clients.append(c) or True) if (c := device_login(topology.broker, "compose-dev-1",
                                                                              password)) else False,
               "the device's broker login")
    device = clients[0]
    topic = device_topic("compose-dev-1", "telemetry")
    for i in range(MESSAGES):
        device.publish(topic, f"not json {i}".encode(), qos=1).wait_for_publish(10)
    device.loop_stop()
    device.disconnect()

    engine = create_engine(topology.database_url)

    def quarantined() -> int:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(QuarantinedMessage)).scalar_one())

    wait_until(lambda: quarantined() == MESSAGES, f"{MESSAGES} quarantined windows")
    engine.dispose()

    scrape = {"Authorization": f"Bearer {topology.secrets['EDGELOOP_METRICS_TOKEN']}"}
    texts = [httpx.get(f"{s.base_url}/metrics", headers=scrape, timeout=30).text for s in (api_1, api_2)]
    received = [metric_sum(text, "edgeloop_telemetry_windows_received_total") for text in texts]
    # The shared subscription split the stream between the two replicas' consumers: each took some, none twice.
    assert sum(received) == MESSAGES and min(received) > 0, received
    assert all(metric_sum(text, "edgeloop_mqtt_connected") == 2 for text in texts)  # bridge + consumer
    assert all(metric_sum(text, "edgeloop_mqtt_connects_total") == 2 for text in texts)  # once each, no flapping
    assert all(metric_sum(text, "edgeloop_telemetry_quarantine_rows") == MESSAGES for text in texts)
    assert httpx.get(f"{api_1.base_url}/metrics", timeout=10).status_code == 401

    stop(topology.services)
    leaked = [admin, provisioned["token"], password, *(topology.secrets[key] for key in (
        "EDGELOOP_MQTT_PASSWORD", "EDGELOOP_KEY_ENCRYPTION_KEY", "EDGELOOP_METRICS_TOKEN"))]
    for service in (api_1, api_2):
        lines = service.log.read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        access = [r for r in records if r["logger"] == "control_plane.access"]
        assert access and all(r["request_id"] for r in access), service.name
        # Log records are JSON, uvicorn's too; what else is on the console is start-up output meant for a person.
        assert any(r["logger"].startswith("uvicorn") for r in records), service.name
        assert not [line for line in lines if re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b", line)], service.name
        text = "\n".join(lines)
        assert not [secret for secret in leaked if secret and secret in text], service.name

"""mqtts:// against a real mosquitto TLS listener, with a CA and certificates made here by `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control_plane.mqtt.broker import PrivateMosquitto, TlsListener
from control_plane.mqtt.connection import MqttConnection
from control_plane.settings import Settings
from edge_agent.config import EdgeConfig
from edge_agent.mqtt import MqttLink
from tests.control_plane.fleet.conftest import wait_for

pytestmark = pytest.mark.mqtt


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, the broker's certificate for 127.0.0.1, a client certificate, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           *, ca: bool = False, ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o644)  # mosquitto reads them after dropping to its own user
    return path


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a server certificate for 127.0.0.1, a client certificate and a second, unrelated CA."""
    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert_pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key, server_key, client_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    ca = _issue("edgeloop test CA", ca_key, _name("edgeloop test CA"), ca_key, ca=True)
    other = _issue("someone else's CA", other_key, _name("someone else's CA"), other_key, ca=True)
    return Pki(
        ca=_write(directory / "ca.pem", cert_pem(ca)),
        server_cert=_write(directory / "server.pem", cert_pem(_issue("127.0.0.1", server_key, ca.subject, ca_key,
                                                                    ip="127.0.0.1"))),
        server_key=_write(directory / "server.key", key_pem(server_key)),
        client_cert=_write(directory / "client.pem", cert_pem(_issue("dev-tls", client_key, ca.subject, ca_key))),
        client_key=_write(directory / "client.key", key_pem(client_key)),
        other_ca=_write(directory / "other-ca.pem", cert_pem(other)),
    )


@pytest.fixture
def tls_broker() -> Iterator[tuple[PrivateMosquitto, Pki]]:
    workdir = Path(tempfile.mkdtemp(prefix="edgeloop-tls-"))  # under /tmp: mosquitto's own user must read it
    workdir.chmod(0o755)
    pki = make_pki(workdir)
    broker = PrivateMosquitto(workdir, persistence=False,
                              tls=TlsListener(pki.server_cert, pki.server_key, pki.ca, require_certificate=True))
    broker.add_user("dev-tls", "tls-secret")
    broker.start()
    yield broker, pki
    broker.close()


def test_control_plane_connection_over_mqtts_with_client_certificate(tls_broker: tuple[PrivateMosquitto, Pki],
                                                                     tmp_path: Path) -> None:
    broker, pki = tls_broker
    settings = Settings(data_dir=tmp_path, mqtt_url=f"mqtts://127.0.0.1:{broker.tls_port}",
                        mqtt_username=broker.control_plane_user, mqtt_password=broker.control_plane_password,
                        mqtt_ca_file=pki.ca, mqtt_client_cert=pki.client_cert, mqtt_client_key=pki.client_key)
    from control_plane.mqtt.connection import client_url

    got: list[bytes] = []
    connection = MqttConnection(client_url(settings), f"cp-{uuid.uuid4().hex[:6]}")
    connection.subscribe("edgeloop/devices/+/status", lambda m: got.append(bytes(m.payload)), shared=False)
    connection.start(timeout=15)
    try:
        assert connection.address.tls and connection.address.port == broker.tls_port
        connection.publish("edgeloop/devices/dev-tls/status", b"over tls")
        wait_for(lambda: got == [b"over tls"])
    finally:
        connection.stop()


def test_edge_agent_link_over_mqtts_and_a_wrong_ca_is_refused(tls_broker: tuple[PrivateMosquitto, Pki],
                                                              tmp_path: Path) -> None:
    broker, pki = tls_broker
    base = {"device_id": "dev-tls", "device_token": "t", "control_plane_url": "http://127.0.0.1:1",
            "state_dir": tmp_path, "trusted_public_key": "unused", "broker_username": "dev-tls",
            "broker_password": "tls-secret", "broker_url": f"mqtts://127.0.0.1:{broker.tls_port}",
            "broker_client_cert": pki.client_cert, "broker_client_key": pki.client_key}
    manifests: list[bytes] = []
    link = MqttLink(EdgeConfig(**base, broker_ca_file=pki.ca), on_manifest=manifests.append,
                    presence=lambda online: b"{}")
    link.start()
    try:
        assert link.connected.wait(15)
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cp-pub")
        broker.authorise(publisher, broker.control_plane_user)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        publisher.publish("edgeloop/devices/dev-tls/manifest", b"signed bytes", qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: manifests == [b"signed bytes"])
        publisher.disconnect()
        publisher.loop_stop()
    finally:
        link.stop()

    refused = threading.Event()
    stranger = MqttLink(EdgeConfig(**base, broker_ca_file=pki.other_ca), on_manifest=manifests.append,
                        presence=lambda online: b"{}")
    stranger.client.on_connect_fail = lambda *_: refused.set()
    stranger.start()
    try:
        assert refused.wait(15)  # the broker's certificate does not chain to the CA this device trusts
        assert not stranger.connected.is_set()
    finally:
        stranger.stop()


def test_mqtts_url_options_are_checked() -> None:
    from control_plane.mqtt.connection import BrokerAddress

    address = BrokerAddress.parse("mqtts://u%40x:p%3Aw@broker.example?" + urlencode({"ca_file": "/ca.pem"}))
    assert (address.port, address.tls, address.username, address.password, address.ca_file) == \
        (8883, True, "u@x", "p:w", "/ca.pem")
    for bad in ("mqtt://h?ca_file=/x", "mqtts://h?certfile=/c", "mqtts://h?verify=no", "http://h"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)

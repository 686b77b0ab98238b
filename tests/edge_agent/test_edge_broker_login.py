"""The agent's broker login and TLS settings, and simulated devices logging in as themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from control_plane.mqtt.broker import PrivateMosquitto
from edge_agent.config import ConfigError, EdgeConfig, load_config
from edge_agent.simulator import Fleet, fleet_configs

BASE = {"EDGELOOP_EDGE_DEVICE_ID": "d1", "EDGELOOP_EDGE_DEVICE_TOKEN": "t", "EDGELOOP_EDGE_STATE_DIR": "/tmp/x",
        "EDGELOOP_EDGE_CONTROL_PLANE_URL": "http://cp", "EDGELOOP_EDGE_TRUSTED_PUBLIC_KEY": "k",
        "EDGELOOP_EDGE_BROKER_URL": "mqtt://broker:1883"}


def test_broker_login_and_tls_settings_are_checked() -> None:
    config = load_config(env={**BASE, "EDGELOOP_EDGE_BROKER_URL": "mqtts://broker",
                              "EDGELOOP_EDGE_BROKER_USERNAME": "d1", "EDGELOOP_EDGE_BROKER_PASSWORD": "pw",
                              "EDGELOOP_EDGE_BROKER_CA_FILE": "/etc/ca.pem"})
    assert (config.broker_tls, config.broker_port, config.broker_username, config.broker_ca_file) == \
        (True, 8883, "d1", Path("/etc/ca.pem"))
    assert load_config(env=BASE).broker_port == 1883 and not load_config(env=BASE).broker_tls
    for bad in ({"EDGELOOP_EDGE_BROKER_CA_FILE": "/etc/ca.pem"},  # TLS files with a plain mqtt:// URL
                {"EDGELOOP_EDGE_BROKER_URL": "mqtts://b", "EDGELOOP_EDGE_BROKER_CLIENT_CERT": "/c.pem"},
                {"EDGELOOP_EDGE_BROKER_PASSWORD": "pw"},
                {"EDGELOOP_EDGE_BROKER_URL": "http://b"}):
        with pytest.raises(ConfigError):
            load_config(env={**BASE, **bad})


@pytest.mark.mqtt
def test_simulated_devices_log_in_with_their_own_passwords(tmp_path: Path, signer: Any) -> None:
    broker = PrivateMosquitto(persistence=False)
    passwords = {f"s-{index:05d}": f"secret-{index}" for index in range(3)}
    for device_id, password in list(passwords.items())[:2]:
        broker.add_user(device_id, password)  # the third device is not known to the broker
    broker.start()
    template = EdgeConfig(device_id="t", device_token="", broker_url=broker.url, control_plane_url="http://x",
                          state_dir=tmp_path, trusted_public_key=signer.public_b64, reconnect_max_s=1)
    configs = fleet_configs(devices=3, template=template, state_root=tmp_path, prefix="s-",
                            broker_passwords=passwords)
    assert [(c.broker_username, c.broker_password) for c in configs] == list(passwords.items())
    fleet = Fleet(configs, shared_root=tmp_path / "_shared", workers=1)
    fleet.start()
    try:
        assert fleet.wait_until(lambda f: f.snapshot()["connected"] == 2, 20)
        assert not fleet.wait_until(lambda f: f.snapshot()["connected"] > 2, 2)
        assert not fleet.devices["s-00002"].connected
    finally:
        fleet.stop()
        broker.close()

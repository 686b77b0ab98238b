"""Config loading: TOML file, EDGELOOP_EDGE_* overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import DEFAULT_MAX_ARTIFACT_BYTES, ConfigError, load_config

TOML = """
[edge]
device_id = "dev-0001"
device_token = "tok"
broker_url = "mqtt://10.0.0.5:1884"
control_plane_url = "http://cp:8000"
state_dir = "/var/lib/edgeloop"
trusted_public_key = "/etc/edgeloop/cp.pub"
"""


def test_toml_then_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(TOML)
    config = load_config(path, env={"EDGELOOP_EDGE_DEVICE_ID": "dev-0002", "EDGELOOP_EDGE_MAX_ARTIFACT_BYTES": "1000",
                                    "EDGELOOP_EDGE_PREDICT_PORT": "8081", "UNRELATED": "x"})
    assert config.device_id == "dev-0002"
    assert config.max_artifact_bytes == 1000
    assert config.predict_port == 8081
    assert config.broker_host == "10.0.0.5" and config.broker_port == 1884
    assert config.state_dir == Path("/var/lib/edgeloop")


def test_env_only_with_defaults() -> None:
    env = {f"EDGELOOP_EDGE_{k.upper()}": v for k, v in {
        "device_id": "d", "device_token": "t", "broker_url": "mqtt://localhost", "control_plane_url": "http://cp",
        "state_dir": "/tmp/x", "trusted_public_key": "k"}.items()}
    config = load_config(None, env=env)
    assert config.max_artifact_bytes == DEFAULT_MAX_ARTIFACT_BYTES == 64 * 1024 * 1024
    assert config.broker_port == 1883 and config.predict_port is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EDGELOOP_EDGE_DEVICE_TOKEN": ""}, "missing"),
        ({"EDGELOOP_EDGE_BROKER_URL": "http://x"}, "mqtt://"),
        ({"EDGELOOP_EDGE_MAX_ARTIFACT_BYTES": "lots"}, "invalid"),
        ({"EDGELOOP_EDGE_MAX_ARTIFACT_BYTES": "0"}, "positive"),
    ],
)
def test_invalid_config_is_refused(tmp_path: Path, env: dict[str, str], message: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(TOML)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env=env)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(TOML + 'colour = "blue"\n')
    with pytest.raises(ConfigError, match="unknown"):
        load_config(path, env={})

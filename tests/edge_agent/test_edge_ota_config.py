"""The OTA bounds in the agent's config: parsed from the environment, refused when they cannot bound anything."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, load_config

BASE = {f"EDGELOOP_EDGE_{k.upper()}": v for k, v in {
    "device_id": "d", "device_token": "t", "broker_url": "mqtt://localhost", "control_plane_url": "http://cp",
    "state_dir": "/tmp/x", "trusted_public_key": "k"}.items()}


def test_ota_bounds_have_defaults_and_env_overrides() -> None:
    config = load_config(None, env=BASE)
    assert (config.download_min_rate_bps, config.download_grace_s, config.ota_max_attempts) == (4096.0, 60.0, 3)
    assert config.manifest_max_validity_s == 30 * 86_400 and config.manifest_clock_skew_s == 300
    config = load_config(None, env={**BASE, "EDGELOOP_EDGE_OTA_MAX_ATTEMPTS": "5",
                                    "EDGELOOP_EDGE_DOWNLOAD_MIN_RATE_BPS": "1e6"})
    assert config.ota_max_attempts == 5 and config.download_min_rate_bps == 1e6


@pytest.mark.parametrize(("name", "value"), [
    ("DOWNLOAD_MIN_RATE_BPS", "0"), ("DOWNLOAD_MIN_RATE_BPS", "nan"), ("DOWNLOAD_GRACE_S", "-1"),
    ("OTA_MAX_ATTEMPTS", "0"), ("OTA_RETRY_BACKOFF_S", "-0.5"), ("MANIFEST_MAX_VALIDITY_S", "0"),
    ("MANIFEST_CLOCK_SKEW_S", "nan"),
])
def test_bounds_that_bound_nothing_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, env={**BASE, f"EDGELOOP_EDGE_{name}": value})

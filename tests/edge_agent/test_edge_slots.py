"""Durable state: atomic records, boot-time trial resolution, fallback when a slot file is damaged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.durable import read_json, write_json_atomic
from edge_agent.inference import InferenceEngine
from edge_agent.manifest import load_public_key
from edge_agent.ota import OtaUpdater
from edge_agent.slots import SlotStore


def _record(slot: str, sequence: int, sha: str = "0" * 64) -> dict[str, Any]:
    return {"slot": slot, "sequence": sequence, "sha256": sha, "model": {"name": "m", "version": sequence},
            "rollout_id": f"ro_{sequence}"}


def test_atomic_json_and_corrupt_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    path.write_text('{"a": ')
    assert read_json(path) is None
    assert read_json(tmp_path / "missing.json") is None


def test_inactive_slot_alternates(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    assert store.active() is None and store.inactive_slot() == "a"
    store.commit(_record("a", 1))
    assert store.inactive_slot() == "b"
    store.commit(_record("b", 2))
    active = store.active()
    assert active is not None and active["previous"]["slot"] == "a" and "previous" not in active["previous"]
    assert store.inactive_slot() == "a"


def test_boot_reverts_an_unconfirmed_trial(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    store.commit(_record("a", 1))
    store.begin_trial(_record("b", 2))
    resolution = store.resolve_boot()
    assert resolution is not None and (resolution.state, resolution.reason) == ("reverted", "trial_interrupted")
    assert store.active()["slot"] == "a"  # type: ignore[index]
    assert store.trial() is None and store.resolve_boot() is None


def test_boot_keeps_a_committed_trial(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    store.commit(_record("a", 1))
    store.begin_trial(_record("b", 2))
    store.commit(_record("b", 2))
    resolution = store.resolve_boot()
    assert resolution is not None and resolution.state == "activated"
    assert store.active()["slot"] == "b"  # type: ignore[index]


def test_damaged_active_slot_falls_back_to_previous(tmp_path: Path, models: Any, signer: Any) -> None:
    from edge_agent.config import EdgeConfig

    v1, v2 = models["v1_plain"], models["v2_plain"]
    store = SlotStore(tmp_path)
    store.model_path("a").write_bytes(v1.data)
    store.commit(_record("a", 1, v1.sha256))
    store.model_path("b").write_bytes(v2.data[:-10])  # bit rot / torn write in the active slot
    store.commit(_record("b", 2, v2.sha256))
    events: list[dict[str, Any]] = []
    config = EdgeConfig(device_id="d", device_token="t", broker_url="mqtt://x", control_plane_url="http://x",
                        state_dir=tmp_path, trusted_public_key=signer.public_b64)
    engine = InferenceEngine()
    OtaUpdater(config=config, key=load_public_key(signer.public_b64), slots=store, engine=engine,
               emit=events.append).boot()
    assert engine.predict(v1.inputs)[0].tolist() == v1.labels
    assert store.active()["slot"] == "a"  # type: ignore[index]
    assert [(e["state"], e["reason"], e["slot"]) for e in events] == [("reverted", "load_failed", "a")]


def test_boot_records_an_activation_whose_outcome_was_not_written(tmp_path: Path, signer: Any) -> None:
    from edge_agent.config import EdgeConfig

    store = SlotStore(tmp_path)
    store.accept(sequence=3, payload_sha256="p", info={})
    store.commit(_record("a", 3))
    config = EdgeConfig(device_id="d", device_token="t", broker_url="mqtt://x", control_plane_url="http://x",
                        state_dir=tmp_path, trusted_public_key=signer.public_b64)
    OtaUpdater(config=config, key=load_public_key(signer.public_b64), slots=store, engine=InferenceEngine(),
               emit=lambda e: None).boot()
    assert store.ota_record()["outcome"] == "activated"


def test_unexpected_error_mid_trial_keeps_the_committed_model(
    tmp_path: Path, models: Any, signer: Any, harness: Any, monkeypatch: Any
) -> None:
    from edge_agent import ota
    from edge_agent.config import EdgeConfig

    v1, v2 = models["v1_plain"], models["v2_plain"]
    config = EdgeConfig(device_id="solo", device_token=harness.server.token, broker_url="mqtt://x",
                        control_plane_url=harness.server.base, state_dir=tmp_path,
                        trusted_public_key=signer.public_b64)
    events: list[dict[str, Any]] = []
    engine = InferenceEngine()
    store = SlotStore(tmp_path)
    updater = OtaUpdater(config=config, key=load_public_key(signer.public_b64), slots=store, engine=engine,
                         emit=events.append)
    first = harness.manifest("solo", 1, v1)
    first["artifact"]["url"] = first["artifact"]["url"].removeprefix(harness.server.base)  # a path
    updater.handle(signer.envelope(first))
    assert events[-1]["state"] == "activated"

    def exploding_self_test(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the self-test")

    monkeypatch.setattr(ota, "run_self_test", exploding_self_test)
    second = harness.manifest("solo", 2, v2)
    updater.handle(signer.envelope(second))
    assert (events[-1]["state"], events[-1]["reason"]) == ("failed", "internal_error")
    # The control plane can attribute the failure to its rollout.
    assert (events[-1]["rollout_id"], events[-1]["sequence"]) == (second["rollout_id"], 2)
    assert store.trial() is None and store.active()["sha256"] == v1.sha256  # type: ignore[index]
    assert engine.predict(v1.inputs)[0].tolist() == v1.labels

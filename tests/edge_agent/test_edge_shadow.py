"""Shadow evaluation on a real agent: the staged candidate sees sampled inputs, never answers, is stopped if slow."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.daemon import EdgeAgent
from tests.edge_agent.edge_support import Harness, ModelArtifact

pytestmark = pytest.mark.mqtt


def _labels(model: ModelArtifact, rows: np.ndarray) -> list[str]:
    session = ort.InferenceSession(model.data, providers=["CPUExecutionProvider"])
    return [str(v) for v in session.run(None, {session.get_inputs()[0].name: rows})[0]]


def _stage(harness: Harness, agent: EdgeAgent, sequence: int, model: ModelArtifact, **overrides: object) -> None:
    device = agent.config.device_id
    harness.publish(device, harness.manifest(device, sequence, model, rollout_id=f"ro_sh_{uuid.uuid4().hex[:6]}",
                                             stage_only=True, **overrides))


def test_shadow_scores_the_candidate_without_answering_with_it(
    agent_factory: Callable[..., EdgeAgent], harness: Harness, models: dict[str, ModelArtifact]
) -> None:
    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    agent = agent_factory()
    device = agent.config.device_id
    harness.deploy(agent, 1, v1)
    _stage(harness, agent, 2, v2, shadow={"sample_rate": 1.0, "max_latency_ms": 1000.0})
    harness.observer.wait_status(device, "staged", 2)
    rows = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32) * 4
    served = [str(agent.engine.predict(row)[0][0]) for row in rows]
    assert served == _labels(v1, rows)  # The active model answers every call.
    shadow = agent.engine.shadow
    assert shadow is not None
    shadow.flush()
    sketch = shadow.window()
    candidate = _labels(v2, rows)
    assert sketch["rows"] == len(rows) and sketch["errors"] == 0 and sketch["stopped"] is None
    assert sketch["agree"] == sum(a == b for a, b in zip(served, candidate, strict=True))
    assert sketch["candidate_labels"] == dict(Counter(candidate))
    assert sum(sketch["latency_counts"]) == len(rows)
    assert len(json.dumps(sketch)) < 2000  # A sketch: no inputs leave the device.
    assert shadow.window()["rows"] == 0  # Windows reset.


def test_slow_or_broken_shadow_is_stopped_and_reported_and_bad_settings_rejected(
    agent_factory: Callable[..., EdgeAgent], harness: Harness, models: dict[str, ModelArtifact]
) -> None:
    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    agent = agent_factory()
    device = agent.config.device_id
    harness.deploy(agent, 1, v1)
    def rejected() -> list[dict[str, object]]:
        return [e for e in harness.observer.statuses(device) if e["state"] == "rejected"]

    for count, shadow in enumerate(({"sample_rate": 0}, {"sample_rate": 1.5}, {"max_latency_ms": -1},
                                    {"sample_rate": 0.5, "extra": 1}, [1]), start=1):
        _stage(harness, agent, 2, v2, shadow=shadow)
        harness.observer.wait(lambda n=count: len(rejected()) >= n)
    harness.publish(device, harness.manifest(device, 7, v2, shadow={"sample_rate": 0.5}))  # shadow needs stage_only
    harness.observer.wait(lambda: len(rejected()) >= 6)
    assert {e["reason"] for e in rejected()} == {"malformed"}
    harness.assert_serving(agent, v1)

    # A budget no model can meet: stopped and reported after enough samples, the active model keeps serving.
    _stage(harness, agent, 8, v2, shadow={"sample_rate": 1.0, "max_latency_ms": 1e-6})
    harness.observer.wait_status(device, "staged", 8)
    for row in v1.inputs.tolist() * 5:
        agent.engine.predict(np.asarray(row, dtype=np.float32))
    event = harness.observer.wait_status(device, "shadow_stopped", 8)
    assert event["reason"] == "shadow_too_slow" and agent.engine.shadow is None
    harness.assert_serving(agent, v1)

    # A candidate that fails its self-test is never shadowed.
    _stage(harness, agent, 9, v2, shadow={"sample_rate": 1.0, "max_latency_ms": 1000.0},
           self_test={"expected_labels": [(label + 1) % 10 for label in v2.labels]})
    harness.observer.wait_status(device, "failed", 9)
    assert agent.engine.shadow is None
    harness.assert_serving(agent, v1)


def test_the_telemetry_window_carries_the_shadow_sketch_and_a_stopped_shadows_last_numbers(
    models: dict[str, ModelArtifact]
) -> None:
    from control_plane.drift.baseline import build_baseline
    from edge_agent.inference import InferenceEngine, ModelRuntime, make_session
    from edge_agent.shadow import ShadowRunner
    from edge_agent.telemetry import MemorySink, WindowRecorder

    v1, v2 = models["v1_zipmap"], models["v2_zipmap"]
    rows = np.random.default_rng(1).normal(size=(60, 64)).astype(np.float32) * 4
    engine = InferenceEngine()
    engine.swap(ModelRuntime(make_session(v1.data), {"model": {"name": "digits", "version": 1}}))
    sink, clock = MemorySink(), [1000.0]
    recorder = WindowRecorder(build_baseline(rows.astype(np.float64)).to_dict(), device_id="dev-s", model_name="digits",
                              model_version=1, sink=sink, clock=lambda: clock[0], shadow=engine.take_shadow_sketch)
    engine.set_recorder(recorder)
    candidate = ModelRuntime(make_session(v2.data), {"model": {"name": "digits", "version": 2}, "sha256": v2.sha256,
                                                     "rollout_id": "ro_s"})

    def stopped(reason: str, sketch: dict[str, object]) -> None:  # what BlueGreen.start_shadow does
        engine.shadow, engine.shadow_final = None, sketch

    engine.shadow = ShadowRunner(candidate, sample_rate=1.0, max_latency_ms=1000.0, on_stop=stopped)
    served = [str(engine.predict(row)[0][0]) for row in rows[:40]]
    engine.shadow.flush()
    message = recorder.close_window()
    assert message is not None
    sketch = message["shadow"]
    assert sketch["rollout_id"] == "ro_s" and sketch["candidate"] == {"name": "digits", "version": 2,
                                                                      "sha256": v2.sha256}
    assert sketch["kind"] == "classification" and sketch["rows"] == sketch["samples"] == 40
    assert sketch["agree"] == sum(a == b for a, b in zip(served, _labels(v2, rows[:40]), strict=True))
    assert sum(sketch["active_latency_counts"]) == sum(sketch["latency_counts"]) == 40
    assert len(json.dumps(message["shadow"])) < 2000  # counts only, no inputs

    engine.shadow.stop()  # a new slow candidate: stopped after enough samples, its numbers sent once
    engine.shadow = ShadowRunner(candidate, sample_rate=1.0, max_latency_ms=1e-6, on_stop=stopped)
    for row in rows:
        engine.predict(row)
        if engine.shadow is not None:
            engine.shadow.flush()
    assert engine.shadow is None
    message = recorder.close_window()
    assert message is not None and message["shadow"]["stopped"] == "shadow_too_slow"
    engine.predict(rows[0])
    message = recorder.close_window()
    assert message is not None and "shadow" not in message


def test_a_regressor_candidate_is_compared_by_its_error_distribution(models: dict[str, ModelArtifact]) -> None:
    from edge_agent.inference import ModelRuntime, make_session
    from edge_agent.shadow import ShadowRunner

    runner = ShadowRunner(ModelRuntime(make_session(models["v1_zipmap"].data), {}), sample_rate=1.0,
                          max_latency_ms=1000.0)
    active = np.array([1.0, 2.0, 100.0, 5.0])
    agree, histogram = runner._compare(active, np.array([1.005, 3.0, 100.5, np.nan]))
    assert agree == 2 and histogram is not None and int(histogram.sum()) == 4 and int(histogram[-1]) == 1
    runner._record(active, np.array([1.005, 3.0, 100.5, np.nan]), 1.0, np.full(4, 0.5))
    sketch = runner.window()
    assert sketch["kind"] == "regression" and sketch["agree"] == 2 and sum(sketch["error_counts"]) == 4
    assert sketch["candidate_labels"] == {}
    runner.stop()


def test_geometric_skips_sample_at_the_configured_rate(models: dict[str, ModelArtifact]) -> None:
    from edge_agent.inference import ModelRuntime, make_session
    from edge_agent.shadow import ShadowRunner

    runner = ShadowRunner(ModelRuntime(make_session(models["v1_zipmap"].data), {}), sample_rate=0.1,
                          max_latency_ms=1000.0, seed=5)
    skips = [runner._skip() for _ in range(20000)]
    assert min(skips) >= 1 and abs(np.mean(skips) - 10.0) < 0.4  # mean of Geometric(0.1) is 10
    offered: list[int] = []
    runner.offer = lambda *_: (offered.append(1), setattr(runner, "countdown", runner._skip()))  # type: ignore[method-assign]
    row, label = np.zeros((1, 64), dtype=np.float32), np.zeros(1, dtype=np.int64)
    for _ in range(20000):
        runner.sample(row, label)
    assert 1800 < len(offered) < 2200
    runner.stop()

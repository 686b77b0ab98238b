"""Inference engine: output decoding, thread-safe swaps, telemetry seam, self-test, HTTP endpoint."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from edge_agent.http_api import serve_predict
from edge_agent.inference import (
    InferenceEngine,
    ModelRuntime,
    NoModelLoaded,
    NullRecorder,
    TelemetryRecorder,
    decode_outputs,
    make_session,
    run_self_test,
)
from edge_agent.manifest import SelfTest


def _runtime(model: Any) -> ModelRuntime:
    return ModelRuntime(make_session(model.data), {"sha256": model.sha256, "model": {"version": model.version}})


def test_zipmap_and_tensor_outputs_decode_alike(models: Any) -> None:
    zipmap, plain = _runtime(models["v1_zipmap"]), _runtime(models["v1_plain"])
    rows = models["v1_plain"].inputs
    labels_a, scores_a = zipmap.run(rows)
    labels_b, scores_b = plain.run(rows)
    assert labels_a.tolist() == labels_b.tolist() == models["v1_plain"].labels
    assert scores_a is not None and scores_b is not None and scores_a.shape == (len(rows), 10)
    np.testing.assert_allclose(scores_a, scores_b, atol=1e-6)


def test_decode_score_only_outputs_uses_argmax() -> None:
    labels, scores = decode_outputs([np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)])
    assert labels.tolist() == [1, 0] and scores is not None


def test_decode_without_outputs_is_an_error() -> None:
    with pytest.raises(ValueError):
        decode_outputs([])


class ListRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def observe(self, inputs: np.ndarray, labels: np.ndarray, scores: np.ndarray | None, latency_s: float,
                error: bool) -> None:
        self.calls.append((inputs.shape, labels.tolist(), scores is None, latency_s, error))


def test_predict_reports_each_call_to_the_recorder(models: Any) -> None:
    recorder = ListRecorder()
    assert isinstance(recorder, TelemetryRecorder) and isinstance(NullRecorder(), TelemetryRecorder)
    engine = InferenceEngine(recorder)
    with pytest.raises(NoModelLoaded):
        engine.predict(np.zeros(64))
    engine.swap(_runtime(models["v1_int8"]))
    labels, _ = engine.predict(models["v1_int8"].inputs[0])  # one row is accepted as a batch of one
    assert labels.tolist() == models["v1_int8"].labels[:1]
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type
        engine.predict(np.zeros((1, 3)))
    assert [c[4] for c in recorder.calls] == [False, True]
    assert recorder.calls[0][0] == (1, 64) and recorder.calls[0][3] > 0


def test_a_failing_recorder_never_breaks_inference(models: Any) -> None:
    class Broken:
        def observe(self, *args: Any) -> None:
            raise RuntimeError("telemetry down")

    engine = InferenceEngine(Broken())
    engine.swap(_runtime(models["v1_plain"]))
    assert engine.predict(models["v1_plain"].inputs)[0].tolist() == models["v1_plain"].labels


def test_predictions_stay_consistent_while_models_swap(models: Any) -> None:
    v1, v2 = models["v1_plain"], models["v2_plain"]
    runtimes = [_runtime(v1), _runtime(v2)]
    engine = InferenceEngine()
    engine.swap(runtimes[0])
    stop = threading.Event()
    seen: list[list[int]] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen.append(engine.predict(v1.inputs)[0].tolist())
            except BaseException as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for index in range(200):
        engine.swap(runtimes[index % 2])
    stop.set()
    for thread in threads:
        thread.join()
    expected_v2 = runtimes[1].run(v1.inputs)[0].tolist()
    assert not errors and seen
    assert all(labels in (v1.labels, expected_v2) for labels in seen)


def _self_test(model: Any, **overrides: Any) -> SelfTest:
    values: dict[str, Any] = {"inputs": model.inputs.tolist(), "expected_labels": model.labels,
                              "expected_scores": model.scores, "tolerance": 1e-4, "max_latency_ms": 1000.0}
    values.update(overrides)
    return SelfTest(**values)


def test_self_test_pass_and_each_failure(models: Any) -> None:
    model = models["v2_int8"]
    runtime = _runtime(model)
    ok = run_self_test(runtime, _self_test(model))
    assert ok.ok and ok.latency_p50_ms is not None
    wrong = run_self_test(runtime, _self_test(model, expected_labels=[(x + 1) % 10 for x in model.labels]))
    assert (wrong.ok, wrong.reason) == (False, "self_test_failed")
    drift = run_self_test(runtime, _self_test(model, expected_scores=[[v + 0.1 for v in r] for r in model.scores]))
    assert (drift.ok, drift.reason) == (False, "self_test_failed")
    shape = run_self_test(runtime, _self_test(model, expected_scores=[[0.5] for _ in model.scores]))
    assert (shape.ok, shape.reason) == (False, "self_test_failed")
    slow = run_self_test(runtime, _self_test(model, max_latency_ms=1e-9))
    assert (slow.ok, slow.reason) == (False, "latency_exceeded")
    broken = run_self_test(runtime, _self_test(model, inputs=[[1.0, 2.0]], expected_labels=[1],
                                               expected_scores=None))
    assert (broken.ok, broken.reason) == (False, "self_test_failed")


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_http_predict_endpoint(models: Any) -> None:
    model = models["v1_int8"]
    engine = InferenceEngine()
    server = serve_predict(engine, 0, lambda: {"model": {"version": 1}, "slot": "a"})
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _post(base + "/predict", json.dumps({"inputs": model.inputs.tolist()}).encode())[0] == 503
        engine.swap(_runtime(model))
        code, body = _post(base + "/predict", json.dumps({"inputs": model.inputs.tolist()}).encode())
        assert code == 200 and body["labels"] == model.labels and body["slot"] == "a"
        assert len(body["scores"]) == len(model.labels)
        assert _post(base + "/predict", b"{oops")[0] == 400
        assert _post(base + "/predict", json.dumps({"inputs": [[1.0, 2.0]]}).encode())[0] == 400
        assert _post(base + "/nope", b"{}")[0] == 404
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            assert json.load(response)["ready"] is True
    finally:
        server.shutdown()

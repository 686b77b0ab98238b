"""Fleet fixtures: small real ONNX models (fp32, int8, non-deterministic), registration helpers, a private broker."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from control_plane.mqtt.broker import PrivateMosquitto


@dataclass(frozen=True)
class FleetModels:
    """ONNX bytes: two digits MLP versions (fp32 + int8) and a model whose outputs are random."""

    v1_fp32: bytes
    v1_int8: bytes
    v2_fp32: bytes
    v2_int8: bytes
    noisy: bytes


def noisy_model(n_features: int = 64, n_classes: int = 10) -> bytes:
    """A classifier whose scores include fresh random noise on every run, so no self-test can pass."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [n_features, n_classes],
                                 np.random.default_rng(0).standard_normal(n_features * n_classes).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"]),
         helper.make_node("RandomUniformLike", ["logits"], ["noise"], low=0.0, high=100.0),
         helper.make_node("Add", ["logits", "noise"], ["noisy"]),
         helper.make_node("Softmax", ["noisy"], ["probabilities"], axis=1)],
        "noisy", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@pytest.fixture(scope="session")
def fleet_models(tmp_path_factory: pytest.TempPathFactory) -> FleetModels:
    """Train two tiny digits MLPs once per session and export fp32 and int8 ONNX."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from control_plane.registry import onnx_tools

    digits = load_digits()
    built: dict[str, bytes] = {}
    for version, seed in ((1, 0), (2, 1)):
        pipe = make_pipeline(StandardScaler(), MLPClassifier((24,), max_iter=60, random_state=seed))
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(digits.data[:1000].astype(np.float32), digits.target[:1000])
        fp32 = onnx_tools.sklearn_to_onnx(pipe, 64)
        built[f"v{version}_fp32"] = fp32
        built[f"v{version}_int8"] = onnx_tools.quantize_int8(fp32, tmp_path_factory.mktemp(f"q{version}"))
    return FleetModels(**built, noisy=noisy_model())


def register(client: TestClient, headers: dict[str, str], name: str, version: int,
             artifacts: list[tuple[bytes, str]], tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create the model if needed, then a version with the given (bytes, quantization) artifacts."""
    client.post("/api/v1/models", json={"name": name}, headers=headers)
    created = client.post(f"/api/v1/models/{name}/versions", json={"version": version, "tags": tags or {}},
                          headers=headers)
    assert created.status_code == 201, created.text
    for data, quantization in artifacts:
        blob = client.post("/api/v1/artifacts", content=data, headers=headers)
        assert blob.status_code == 201, blob.text
        attached = client.post(f"/api/v1/models/{name}/versions/{version}/artifacts",
                               json={"sha256": blob.json()["sha256"], "quantization": quantization}, headers=headers)
        assert attached.status_code == 201, attached.text
    return dict(created.json())


def provision(client: TestClient, headers: dict[str, str], device_id: str, **body: Any) -> dict[str, Any]:
    """Provision a device through the API and return the response body."""
    response = client.post("/api/v1/fleet/devices", json={"id": device_id, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def private_broker() -> Iterator[PrivateMosquitto]:
    """A private mosquitto for one test: password file and generated ACL, as the demo runs it."""
    broker = PrivateMosquitto()
    broker.start()
    yield broker
    broker.close()


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy and return its value, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")

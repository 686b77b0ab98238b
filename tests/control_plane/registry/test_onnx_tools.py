"""ONNX conversion and int8 quantisation with real onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from control_plane.errors import Invalid
from control_plane.registry import onnx_tools, pipeline


@pytest.fixture(scope="module")
def small_mlp() -> tuple[pipeline.TrainingData, bytes]:
    data = pipeline.load_sklearn_dataset("wine")
    estimator = pipeline.train_mlp(data, hidden=(64, 64))
    return data, onnx_tools.sklearn_to_onnx(estimator, data.x_train.shape[1])


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_int8_keeps_accuracy_and_shrinks(small_mlp: tuple[pipeline.TrainingData, bytes], tmp_path: Path,
                                         static: bool) -> None:
    data, fp32 = small_mlp
    int8 = onnx_tools.quantize_int8(fp32, tmp_path, calibration=data.x_train[:64] if static else None)
    # Static QDQ carries scales and zero points per tensor, so a 64x64 model shrinks less than a large one.
    assert len(int8) < len(fp32) * 0.6
    before = onnx_tools.evaluate(fp32, data.x_test, data.y_test, latency_rows=5)
    after = onnx_tools.evaluate(int8, data.x_test, data.y_test, latency_rows=5)
    assert before.accuracy > 0.9 and abs(after.accuracy - before.accuracy) < 0.05
    inputs, outputs = onnx_tools.inspect_schema(int8)
    assert inputs["tensors"][0]["shape"] == [None, 13]
    assert [t["name"] for t in outputs["tensors"]] == ["label", "probabilities"]


def test_models_without_ai_onnx_ops_are_refused_with_a_reason(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    linear = onnx_tools.sklearn_to_onnx(LogisticRegression().fit(features, features[:, 0] > 0), 3)
    with pytest.raises(Invalid, match="quantisation failed"):
        onnx_tools.quantize_int8(linear, tmp_path)


def test_unknown_demo_dataset_is_named() -> None:
    with pytest.raises(Exception, match="choose one of digits"):
        pipeline.load_sklearn_dataset("imagenet")

"""Inspect, convert, quantise and evaluate ONNX models."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from control_plane.errors import Invalid

_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 8: "string", 9: "bool",
               10: "float16", 11: "float64"}


def inspect_schema(model_bytes: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the (inputs, outputs) schema of an ONNX model, or raise Invalid."""
    try:
        model = onnx.load_model_from_string(model_bytes)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises many unrelated types for bad bytes
        raise Invalid(f"not a valid ONNX model: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}

    def describe(values: Any) -> dict[str, Any]:
        tensors = []
        for value in values:
            if value.name in initializers:
                continue
            kind = value.type.WhichOneof("value")
            if kind == "tensor_type":
                dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
                tensors.append({"name": value.name, "dtype": _ONNX_TYPES.get(value.type.tensor_type.elem_type,
                                                                             "other"), "shape": dims})
            else:
                tensors.append({"name": value.name, "dtype": kind, "shape": None})
        return {"tensors": tensors}

    return describe(model.graph.input), describe(model.graph.output)


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and single-row latency of an ONNX classifier on held-out data."""

    accuracy: float
    latency_p50_us: float
    latency_p99_us: float


def make_session(model: bytes | Path) -> ort.InferenceSession:
    """Create a single-threaded CPU session (edge-like and deterministic)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def predict_labels(session: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """Return predicted labels (the first output of a skl2onnx classifier)."""
    name = session.get_inputs()[0].name
    return np.asarray(session.run([session.get_outputs()[0].name], {name: features.astype(np.float32)})[0])


def evaluate(model: bytes, features: np.ndarray, labels: np.ndarray, latency_rows: int = 200) -> Evaluation:
    """Measure accuracy on all rows and single-row latency on the first ``latency_rows``."""
    session = make_session(model)
    accuracy = float(np.mean(predict_labels(session, features) == labels))
    timings = []
    for row in features[:latency_rows]:
        started = time.perf_counter()
        predict_labels(session, row[None, :])
        timings.append((time.perf_counter() - started) * 1e6)
    return Evaluation(accuracy, float(np.percentile(timings, 50)), float(np.percentile(timings, 99)))


def sklearn_to_onnx(estimator: Any, n_features: int) -> bytes:
    """Convert a fitted scikit-learn classifier to fp32 ONNX with plain probability tensors."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}}
    model = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, n_features]))],
                    options=options, target_opset=17)
    return bytes(model.SerializeToString())


def quantize_int8(fp32_model: bytes, workdir: Path, calibration: np.ndarray | None = None) -> bytes:
    """Quantise to int8: dynamic by default, static (QDQ) when calibration rows are given."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

    workdir.mkdir(parents=True, exist_ok=True)
    source, target = workdir / "fp32.onnx", workdir / "int8.onnx"
    source.write_bytes(fp32_model)
    try:
        if calibration is None:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        else:
            input_name = make_session(fp32_model).get_inputs()[0].name
            rows = calibration.astype(np.float32)[:, None, :]

            class _Rows(CalibrationDataReader):
                def __init__(self) -> None:
                    self._rows = iter(rows)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    row = next(self._rows, None)
                    return None if row is None else {input_name: row}

            quantize_static(source, target, _Rows(), weight_type=QuantType.QInt8)
    except Exception as exc:  # e.g. models made only of ai.onnx.ml operators cannot be quantised
        raise Invalid(f"quantisation failed: {exc}") from exc
    return target.read_bytes()

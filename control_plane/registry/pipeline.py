"""Train → fp32 ONNX → int8 ONNX, evaluated on held-out data and registered with full lineage."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from control_plane.drift.baseline import build_baseline
from control_plane.errors import NotFound
from control_plane.registry import artifacts, onnx_tools, service
from control_plane.registry.models import Artifact, Dataset
from control_plane.registry.schemas import (
    ArtifactAttach,
    DatasetCreate,
    ModelCreate,
    Quantization,
    RunCreate,
    VersionCreate,
)
from control_plane.registry.store import ArtifactStore

DEMO_DATASETS = ("digits", "breast_cancer", "wine")


@dataclass(frozen=True)
class TrainingData:
    """Features and labels split into train and held-out test rows."""

    name: str
    feature_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class PipelineResult:
    """What the pipeline registered and what it measured."""

    model_name: str
    version: int
    dataset_id: str
    run_id: str
    fp32_artifact_id: str
    int8_artifact_id: str
    fp32_bytes: int
    int8_bytes: int
    size_ratio: float
    accuracy_fp32: float
    accuracy_int8: float
    accuracy_delta: float
    latency_p50_us_fp32: float
    latency_p50_us_int8: float

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def load_sklearn_dataset(name: str, seed: int = 0) -> TrainingData:
    """Load a dataset that ships inside scikit-learn (no download) and split it 75/25."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
               "wine": datasets.load_wine}
    if name not in loaders:
        raise NotFound(f"unknown demo dataset {name!r}; choose one of {', '.join(DEMO_DATASETS)}")
    bunch = loaders[name]()
    features = np.asarray(bunch.data, dtype=np.float32)
    names = [str(n) for n in getattr(bunch, "feature_names", [f"f{i}" for i in range(features.shape[1])])]
    x_train, x_test, y_train, y_test = train_test_split(features, bunch.target, test_size=0.25,
                                                        random_state=seed, stratify=bunch.target)
    return TrainingData(name, names, x_train, y_train, x_test, y_test)


def train_mlp(data: TrainingData, hidden: tuple[int, ...] = (256, 256), seed: int = 0) -> Any:
    """Fit StandardScaler + MLP: it exports to MatMul/Add, which onnxruntime can quantise."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=hidden, max_iter=300,
                                                              random_state=seed))
    return estimator.fit(data.x_train, data.y_train)


def fingerprint(data: TrainingData) -> str:
    """Return a content hash of the training and test arrays."""
    digest = hashlib.sha256()
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    return "sha256:" + digest.hexdigest()


def register_quantized_model(
    *, session: Session, store: ArtifactStore, actor: str, model_name: str, data: TrainingData, estimator: Any,
    params: dict[str, Any], baseline: dict[str, Any] | None = None, static: bool = False,
    code_commit: str | None = None,
) -> PipelineResult:
    """Convert, quantise, evaluate and register everything, linked in lineage, in the caller's transaction."""
    n_features = data.x_train.shape[1]
    fp32 = onnx_tools.sklearn_to_onnx(estimator, n_features)
    with tempfile.TemporaryDirectory(prefix="edgeloop-quant-") as workdir:
        int8 = onnx_tools.quantize_int8(fp32, Path(workdir), calibration=data.x_train[:200] if static else None)
    eval_fp32 = onnx_tools.evaluate(fp32, data.x_test, data.y_test)
    eval_int8 = onnx_tools.evaluate(int8, data.x_test, data.y_test)
    if baseline is None:
        # The drift baseline: reference features plus the model's own label distribution on them.
        baseline = build_baseline(data.x_train, feature_names=data.feature_names,
                                  labels=np.asarray(estimator.predict(data.x_train))).to_dict()

    dataset = _find_dataset(session, data) or service.create_dataset(
        session=session, actor=actor, request=DatasetCreate(
        name=data.name, version=fingerprint(data)[7:19], fingerprint=fingerprint(data),
        description=f"scikit-learn {data.name}, 75/25 stratified split",
        schema_={"features": [{"name": n, "dtype": "float32"} for n in data.feature_names],
                "target": {"classes": sorted(int(c) for c in np.unique(data.y_train))},
                "rows": {"train": len(data.x_train), "test": len(data.x_test)}},
        baseline=baseline,
    ))  # fmt: skip
    run = service.create_run(session=session, actor=actor, request=RunCreate(
        name=f"{model_name}-train", dataset_id=dataset.id, params=params, code_commit=code_commit,
        metrics={"accuracy_fp32": eval_fp32.accuracy, "accuracy_int8": eval_int8.accuracy},
    ))
    try:
        service.get_model(session=session, name=model_name)
    except NotFound:
        service.create_model(session=session, actor=actor, request=ModelCreate(
            name=model_name, description=f"MLP classifier on {data.name}", tags={"task": "classification"}))
    version = service.create_version(session=session, model_name=model_name, actor=actor, request=VersionCreate(
        run_id=run.id, metrics={"accuracy": eval_int8.accuracy, "accuracy_fp32": eval_fp32.accuracy},
        description="fp32 + int8 ONNX from the quantisation pipeline",
    ))
    attached: list[Artifact] = []
    for blob, quantization, evaluation, parent in ((fp32, Quantization.FP32, eval_fp32, None),
                                                   (int8, Quantization.INT8, eval_int8, "fp32")):
        sha256, size, _ = store.put_bytes(blob)
        artifacts.record_blob(session=session, sha256=sha256, size=size, actor=actor)
        attached.append(artifacts.attach(
            session=session, store=store, model_name=model_name, version=version.version, actor=actor,
            request=ArtifactAttach(
                sha256=sha256, quantization=quantization, parent_id=attached[0].id if parent else None,
                metrics={"accuracy": evaluation.accuracy, "latency_p50_us": evaluation.latency_p50_us,
                         "latency_p99_us": evaluation.latency_p99_us,
                         **({"size_ratio_vs_parent": len(fp32) / len(int8),
                             "accuracy_delta_vs_parent": evaluation.accuracy - eval_fp32.accuracy}
                            if parent else {})},
            )))
    return PipelineResult(
        model_name=model_name, version=version.version, dataset_id=dataset.id, run_id=run.id,
        fp32_artifact_id=attached[0].id, int8_artifact_id=attached[1].id, fp32_bytes=len(fp32),
        int8_bytes=len(int8), size_ratio=round(len(fp32) / len(int8), 3), accuracy_fp32=eval_fp32.accuracy,
        accuracy_int8=eval_int8.accuracy, accuracy_delta=round(eval_int8.accuracy - eval_fp32.accuracy, 6),
        latency_p50_us_fp32=round(eval_fp32.latency_p50_us, 1), latency_p50_us_int8=round(eval_int8.latency_p50_us, 1),
    )


def _find_dataset(session: Session, data: TrainingData) -> Dataset | None:
    """Reuse the dataset row when the same data was registered before."""
    digest = fingerprint(data)
    return next((d for d in service.list_datasets(session=session, name=data.name) if d.fingerprint == digest), None)

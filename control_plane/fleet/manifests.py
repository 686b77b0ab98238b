"""Build and sign device manifests (docs/protocol.md), with self-tests computed by running the exact artifact."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from control_plane.db.session import Database
from control_plane.errors import Invalid
from control_plane.keys.service import KeyStore, ManifestKeys
from control_plane.registry import onnx_tools
from control_plane.registry.models import Artifact, Dataset, ModelVersion, TrainingRun
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from control_plane.signing import Signer
from edge_agent.inference import decode_outputs as edge_decode_outputs

MANIFEST_SCHEMA = "edgeloop.manifest/v1"
# A manifest row with this envelope clears the device's retained manifest (published as an empty retained message).
CLEARED_ENVELOPE = ""
SELF_TEST_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SelfTest:
    """Self-test vectors of one artifact: inputs and what onnxruntime answered for them."""

    inputs: list[list[float]]
    expected_labels: list[Any]
    expected_scores: list[list[float]] | None


def decode_outputs(outputs: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode classifier outputs with the device's own code, so expected self-test values match what it computes."""
    try:
        return edge_decode_outputs(outputs)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def first_input(artifact: Artifact) -> dict[str, Any]:
    """Return the artifact's first input tensor description ({name, dtype, shape})."""
    tensors = (artifact.input_schema or {}).get("tensors") or []
    if not tensors:
        raise Invalid(f"artifact {artifact.id} has no input schema")
    return dict(tensors[0])


def _dataset_of(session: Session, version: ModelVersion) -> Dataset | None:
    if version.run_id is None:
        return None
    run = session.get(TrainingRun, version.run_id)
    return session.get(Dataset, run.dataset_id) if run is not None and run.dataset_id else None


def baseline_of(session: Session, version: ModelVersion) -> dict[str, Any] | None:
    """Return the drift baseline of the version's training dataset (run → dataset), if any."""
    dataset = _dataset_of(session, version)
    return dataset.baseline if dataset is not None else None


def self_test_inputs(
    session: Session, version: ModelVersion, artifact: Artifact, rows: int
) -> list[list[float]]:
    """Pick self-test rows: stored ones (version tag, then dataset schema), else synthesise deterministically."""
    stored = version.tags.get("self_test_inputs")
    dataset = _dataset_of(session, version)
    if stored is None and dataset is not None:
        stored = (dataset.schema_ or {}).get("self_test_inputs")
    if isinstance(stored, list) and stored:
        return [[float(v) for v in row] for row in stored[:rows]]
    shape = first_input(artifact).get("shape") or [None, 1]
    width = shape[-1] if isinstance(shape[-1], int) and shape[-1] > 0 else 1
    # Seeded by the artifact hash: the same artifact always gets the same rows on every replica.
    rng = np.random.default_rng(int(artifact.sha256[:16], 16))
    baseline = dataset.baseline if dataset is not None else None
    numeric = {f.get("index"): f for f in (baseline or {}).get("numeric", []) if isinstance(f, dict)}
    matrix = rng.standard_normal((rows, width))
    for index, feature in numeric.items():
        # In-distribution values: the baseline's own percentile edges, min and max.
        if isinstance(index, int) and 0 <= index < width:
            grid = [feature.get("min", 0.0), *feature.get("edges", []), feature.get("max", 0.0)]
            matrix[:, index] = rng.choice(np.asarray(grid, dtype=np.float64), size=rows)
    rows_list: list[list[float]] = np.round(matrix.astype(np.float32), 4).tolist()
    return rows_list


def compute_self_test(model_bytes: bytes, inputs: list[list[float]], dtype: str = "float32") -> SelfTest:
    """Run the exact artifact with onnxruntime and record its answers."""
    session = onnx_tools.make_session(model_bytes)
    feed = np.asarray(inputs, dtype=np.dtype(dtype) if dtype in ("float32", "float64") else np.float32)
    labels, scores = decode_outputs(session.run(None, {session.get_inputs()[0].name: feed}))
    return SelfTest(
        inputs=inputs,
        expected_labels=[v.item() if hasattr(v, "item") else v for v in labels],
        expected_scores=None if scores is None else np.asarray(scores, dtype=np.float64).round(6).tolist(),
    )


@dataclass(frozen=True)
class ManifestTemplate:
    """The device-independent fields of a manifest payload, and their JSON without the outer braces."""

    body: dict[str, Any]
    tail: str

    @property
    def sha256(self) -> str:
        """Return the artifact's sha256."""
        return str(self.body["artifact"]["sha256"])


@dataclass
class ManifestFactory:
    """Everything needed to issue manifests: settings, signing keys, artifact bytes and a self-test cache."""

    settings: Settings
    key_store: KeyStore
    store: ArtifactStore
    _keys: ManifestKeys | None = None
    _self_tests: dict[str, SelfTest] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: ArtifactStore | None = None, key_store: KeyStore | None = None
    ) -> ManifestFactory:
        """Resolve the shared manifest signing key (refusing one that disagrees) and open the artifact store."""
        key_store = key_store or KeyStore(settings, Database(settings.resolved_database_url))
        key_store.load("manifest")  # in its own transaction, before any caller's session holds a lock
        factory = cls(settings, key_store, store or ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes))
        factory.keys  # noqa: B018 - read the chain now, not later inside a request's write transaction
        return factory

    @property
    def keys(self) -> ManifestKeys:
        """Return the current manifest key and rotation chain (read once, refreshed by every template())."""
        if self._keys is None:
            with self.key_store.database.transaction(write=False) as session:
                self._keys = self.key_store.manifest_keys(session)
        return self._keys

    @property
    def signer(self) -> Signer:
        """Return the key that signs manifests now."""
        return self.keys.signer

    def artifact_url(self, sha256: str) -> str:
        """Return where devices download an artifact."""
        return f"{self.settings.base_url}/api/v1/artifacts/sha256/{sha256}"

    def self_test(self, session: Session, version: ModelVersion, artifact: Artifact) -> SelfTest:
        """Return the artifact's self-test, computing it once per process."""
        with self._lock:
            cached = self._self_tests.get(artifact.sha256)
        if cached is not None:
            return cached
        inputs = self_test_inputs(session, version, artifact, self.settings.fleet_self_test_rows)
        model_bytes = self.store.open_existing(artifact.sha256).read_bytes()
        result = compute_self_test(model_bytes, inputs, str(first_input(artifact).get("dtype") or "float32"))
        with self._lock:
            self._self_tests[artifact.sha256] = result
        return result

    def template(
        self, session: Session, *, version: ModelVersion, artifact: Artifact, max_latency_ms: float | None = None,
        stage_only: bool = False, shadow: dict[str, float] | None = None,
    ) -> ManifestTemplate:
        """Return the device-independent part of a manifest payload, serialised once."""
        # Pick up a rotation made by any replica (one indexed read per template, not per device).
        self._keys = self.key_store.manifest_keys(session)
        test = self.self_test(session, version, artifact)
        tensor = first_input(artifact)
        body = {
            "model": {"name": version.model.name, "version": version.version},
            "artifact": {"sha256": artifact.sha256, "size": artifact.size, "url": self.artifact_url(artifact.sha256),
                         "format": artifact.format, "quantization": artifact.quantization},
            "input_schema": {"name": tensor.get("name"), "dtype": tensor.get("dtype"), "shape": tensor.get("shape")},
            "self_test": {"inputs": test.inputs, "expected_labels": test.expected_labels,
                          "expected_scores": test.expected_scores, "tolerance": SELF_TEST_TOLERANCE,
                          "max_latency_ms": max_latency_ms or self.settings.fleet_self_test_max_latency_ms},
            "baseline": baseline_of(session, version),
            "telemetry": {"window_seconds": self.settings.fleet_telemetry_window_seconds},
        }
        if stage_only:  # blue-green: the device stages the model and waits for the signed cut-over
            body["stage_only"] = True
        if shadow is not None:  # shadow: the staged candidate also scores a sample of live inputs
            body["shadow"] = {"sample_rate": shadow["sample_rate"], "max_latency_ms": shadow["max_latency_ms"]}
        return ManifestTemplate(body, json.dumps(body, separators=(",", ":"))[1:-1])

    def sign(
        self, template: ManifestTemplate, *, device_id: str, sequence: int, rollout_id: str | None, now: float
    ) -> tuple[str, float]:
        """Fill in the per-device fields, sign, and return (envelope, expires_at)."""
        expires_at = int(now + self.settings.manifest_ttl_seconds)
        head = json.dumps({"schema": MANIFEST_SCHEMA, "device_id": device_id, "sequence": sequence,
                           "rollout_id": rollout_id, "issued_at": int(now), "expires_at": expires_at},
                          separators=(",", ":"))
        # The template (with its baseline, often tens of KB) is serialised once per rollout, not per device.
        data = f"{head[:-1]},{template.tail}}}".encode()
        payload = base64.b64encode(data).decode()
        keys = self.keys
        signature = base64.b64encode(keys.signer.sign(data)).decode()
        # Devices that missed a rotation learn it here: each document is signed by the key before it.
        rotations = f',"key_rotations":[{",".join(keys.rotations)}]' if keys.rotations else ""
        # Base64 and hex never need JSON escaping, so the envelope is formatted directly (json.dumps would rescan).
        envelope = f'{{"payload":"{payload}","signature":"{signature}","key_id":"{keys.signer.key_id}"{rotations}}}'
        return envelope, float(expires_at)


def payload_digest(envelope: str) -> str:
    """Return the sha256 of an envelope's payload bytes (what a device records as accepted)."""
    return hashlib.sha256(base64.b64decode(json.loads(envelope)["payload"])).hexdigest()


_FACTORY_LOCK = threading.Lock()


def factory_for(state: Any) -> ManifestFactory:
    """Return the app's manifest factory (kept on ``app.state``), creating it on first use."""
    with _FACTORY_LOCK:
        if getattr(state, "fleet_factory", None) is None:
            state.fleet_factory = ManifestFactory.from_settings(
                state.settings, state.artifact_store, getattr(state, "key_store", None))
    factory: ManifestFactory = state.fleet_factory
    return factory

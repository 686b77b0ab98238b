"""Test support for the edge agent: real ONNX models, a signer, an artifact server, private mosquitto."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from control_plane.mqtt.broker import PrivateMosquitto
from edge_agent.config import EdgeConfig
from edge_agent.daemon import EdgeAgent

# ---------------------------------------------------------------- models

@dataclass(frozen=True)
class ModelArtifact:
    """An ONNX artifact plus the self-test vectors computed from it with onnxruntime."""

    name: str
    version: int
    data: bytes
    sha256: str
    inputs: np.ndarray
    labels: list[int]
    scores: list[list[float]]
    quantization: str


def _expected(data: bytes, inputs: np.ndarray) -> tuple[list[int], list[list[float]]]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: inputs})
    if isinstance(probabilities, list):
        probabilities = [[row[k] for k in sorted(row)] for row in probabilities]
    return [int(v) for v in labels], np.asarray(probabilities, dtype=np.float64).tolist()


def build_models(work: Path) -> dict[str, ModelArtifact]:
    """Train two small digits MLPs; export fp32 (ZipMap and plain tensor) and an int8 quantised one."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target
    probe = x[1500:1508]
    out: dict[str, ModelArtifact] = {}
    for seed, hidden in ((0, (32,)), (1, (48,))):
        pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden, max_iter=80, random_state=seed))
        # One BLAS thread: on 2 shared cores a threaded BLAS made this fixture 5x slower.
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe.fit(x[:1400], y[:1400])
        types = [("input", FloatTensorType([None, 64]))]
        zipmap = convert_sklearn(pipe, initial_types=types).SerializeToString()
        plain = convert_sklearn(pipe, initial_types=types, options={"zipmap": False}).SerializeToString()
        version = seed + 1
        for variant, data in (("zipmap", zipmap), ("plain", plain)):
            labels, scores = _expected(data, probe)
            out[f"v{version}_{variant}"] = ModelArtifact(
                "digits-mlp", version, data, hashlib.sha256(data).hexdigest(), probe, labels, scores, "none")
        (work / f"v{version}.onnx").write_bytes(plain)
        quantize_dynamic(work / f"v{version}.onnx", work / f"v{version}.int8.onnx", weight_type=QuantType.QInt8)
        data = (work / f"v{version}.int8.onnx").read_bytes()
        labels, scores = _expected(data, probe)
        out[f"v{version}_int8"] = ModelArtifact(
            "digits-mlp", version, data, hashlib.sha256(data).hexdigest(), probe, labels, scores, "int8")
    return out


# ---------------------------------------------------------------- signing


class Signer:
    """Sign manifests like the control plane does."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public_raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_b64 = base64.b64encode(self.public_raw).decode()
        self.key_id = hashlib.sha256(self.public_raw).hexdigest()[:16]

    def envelope(self, payload: dict[str, Any] | bytes, key: Ed25519PrivateKey | None = None) -> bytes:
        """Return the signed envelope bytes for a payload."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signature = (key or self.key).sign(data)
        return json.dumps({"payload": base64.b64encode(data).decode(),
                           "signature": base64.b64encode(signature).decode(), "key_id": self.key_id}).encode()


def make_manifest(
    device_id: str, sequence: int, model: ModelArtifact, url: str, **overrides: Any
) -> dict[str, Any]:
    """Build a manifest payload for an artifact with self-test vectors from the artifact itself."""
    now = time.time()
    manifest: dict[str, Any] = {
        "schema": "edgeloop.manifest/v1", "device_id": device_id, "sequence": sequence,
        "rollout_id": f"ro_{uuid.uuid4().hex[:8]}", "issued_at": now, "expires_at": now + 3600,
        "model": {"name": model.name, "version": model.version},
        "artifact": {"sha256": model.sha256, "size": len(model.data), "url": url, "format": "onnx",
                     "quantization": model.quantization},
        "input_schema": {"name": "input", "dtype": "float32", "shape": [None, 64]},
        "self_test": {"inputs": model.inputs.tolist(), "expected_labels": model.labels,
                      "expected_scores": model.scores, "tolerance": 1e-4, "max_latency_ms": 500.0},
        "baseline": None, "telemetry": {"window_seconds": 60},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key] = {**manifest[key], **value}
        else:
            manifest[key] = value
    return manifest


# ---------------------------------------------------------------- artifact HTTP server


@dataclass
class Fault:
    """Misbehaviour for one artifact path."""

    truncate_at: int | None = None  # send only this many bytes, then drop the connection ...
    truncate_times: int = 0  # ... for this many requests
    endless: bool = False  # stream garbage forever with no Content-Length
    gate_at: int | None = None  # after this many bytes, wait for `release` (signals `reached`)
    trickle_s: float | None = None  # send one byte per this many seconds until `release` (a slow server)
    chunk_delay_s: float | None = None  # send 4 KiB chunks with this pause between them
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class ArtifactServer:
    """A stdlib HTTP server with Range support and a device-token check."""

    def __init__(self) -> None:
        self.token = "dev-token-" + uuid.uuid4().hex[:8]
        self.blobs: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, data: bytes, path: str | None = None) -> str:
        """Serve data and return its URL."""
        path = path or f"/api/v1/artifacts/sha256/{hashlib.sha256(data).hexdigest()}/{uuid.uuid4().hex[:6]}"
        self.blobs[path] = data
        return self.base + path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append({"path": self.path, "range": self.headers.get("Range"),
                                       "auth": self.headers.get("Authorization")})
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self._plain(401)
                    return
                data = outer.blobs.get(self.path)
                if data is None:
                    self._plain(404)
                    return
                fault = outer.faults.get(self.path, Fault())
                if fault.endless:
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        return
                start = 0
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self._plain(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if fault.truncate_at is not None and fault.truncate_times > 0:
                    fault.truncate_times -= 1
                    self.wfile.write(body[: max(fault.truncate_at - start, 0)])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault.trickle_s is not None:
                    fault.reached.set()
                    try:
                        for offset in range(len(body)):
                            if fault.release.is_set():
                                self.wfile.write(body[offset:])
                                return
                            self.wfile.write(body[offset:offset + 1])
                            self.wfile.flush()
                            time.sleep(fault.trickle_s)
                    except OSError:
                        return
                    return
                if fault.chunk_delay_s is not None:
                    try:
                        for offset in range(0, len(body), 4096):
                            self.wfile.write(body[offset:offset + 4096])
                            self.wfile.flush()
                            time.sleep(fault.chunk_delay_s)
                    except OSError:
                        pass
                    return
                if fault.gate_at is not None and start < fault.gate_at:
                    self.wfile.write(body[: fault.gate_at - start])
                    self.wfile.flush()
                    fault.reached.set()
                    fault.release.wait(30)
                    body = body[fault.gate_at - start:]
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def _plain(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


class Observer:
    """Plays the control plane: publishes manifests, records status and presence events."""

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.presence: dict[str, dict[str, Any]] = {}
        self.telemetry: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe([("edgeloop/devices/+/status", 1),
                                                            ("edgeloop/devices/+/presence", 1),
                                                            ("edgeloop/devices/+/telemetry", 1)])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        with self.cond:
            if message.topic.endswith("/presence"):
                self.presence[body["device_id"]] = body
            elif message.topic.endswith("/telemetry"):
                self.telemetry.append(body)
            else:
                self.events.append(body)
            self.cond.notify_all()

    def statuses(self, device_id: str) -> list[dict[str, Any]]:
        """Return the status events seen for a device, oldest first."""
        with self.cond:
            return [e for e in self.events if e["device_id"] == device_id]

    def wait(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until predicate() returns something truthy and return it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (result := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; events: {self.events[-12:]}")
                self.cond.wait(remaining)
            return result

    def wait_status(self, device_id: str, state: str, sequence: int | None = None, **kw: Any) -> dict[str, Any]:
        """Wait for a status event with this state (and sequence) and return it."""
        def find() -> dict[str, Any] | None:
            for event in self.events:
                if event["device_id"] == device_id and event["state"] == state and (
                        sequence is None or event["sequence"] == sequence):
                    return event
            return None
        return dict(self.wait(find, **kw))

    def publish_manifest(self, device_id: str, message: bytes) -> None:
        """Publish a retained QoS 1 manifest message."""
        info = self.client.publish(f"edgeloop/devices/{device_id}/manifest", message, qos=1, retain=True)
        info.wait_for_publish(10)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def edge_config(
    state_dir: Path, broker: PrivateMosquitto, server: ArtifactServer, signer: Signer, device_id: str, **overrides: Any
) -> EdgeConfig:
    """Build a device config for the test broker and artifact server."""
    values: dict[str, Any] = {
        "device_id": device_id, "device_token": server.token, "broker_url": f"mqtt://127.0.0.1:{broker.port}",
        "control_plane_url": server.base, "state_dir": state_dir, "trusted_public_key": signer.public_b64,
        "download_backoff_s": 0.05, "reconnect_min_s": 1, "reconnect_max_s": 2, **overrides,
    }
    return EdgeConfig(**values)


class Harness:
    """Deploy manifests to devices and check what they serve."""

    def __init__(self, observer: Observer, signer: Signer, server: ArtifactServer,
                 models: dict[str, ModelArtifact]) -> None:
        self.observer = observer
        self.signer = signer
        self.server = server
        self.models = models

    def manifest(self, device_id: str, sequence: int, model: ModelArtifact, *, data: bytes | None = None,
                 **overrides: Any) -> dict[str, Any]:
        """Serve data (default: the model bytes) and return a manifest payload for it."""
        url = self.server.add(model.data if data is None else data)
        return make_manifest(device_id, sequence, model, url, **overrides)

    def fault(self, manifest: dict[str, Any], **kwargs: Any) -> Fault:
        """Make the artifact server misbehave for this manifest's URL."""
        fault = Fault(**kwargs)
        self.server.faults[manifest["artifact"]["url"].removeprefix(self.server.base)] = fault
        return fault

    def publish(self, device_id: str, manifest: dict[str, Any] | bytes) -> None:
        """Sign (if a dict) and publish a manifest."""
        message = self.signer.envelope(manifest) if isinstance(manifest, dict) else manifest
        self.observer.publish_manifest(device_id, message)

    def deploy(self, agent: EdgeAgent, sequence: int, model: ModelArtifact) -> dict[str, Any]:
        """Publish a good manifest and wait until the device activates it."""
        manifest = self.manifest(agent.config.device_id, sequence, model)
        self.publish(agent.config.device_id, manifest)
        self.observer.wait_status(agent.config.device_id, "activated", sequence)
        return manifest

    def assert_serving(self, agent: EdgeAgent, model: ModelArtifact) -> None:
        """Assert the agent predicts exactly what model predicts and reports it as active."""
        labels, scores = agent.engine.predict(model.inputs)
        assert labels.tolist() == model.labels
        assert scores is not None
        np.testing.assert_allclose(scores, np.asarray(model.scores), atol=1e-4)
        active = agent.slots.active()
        assert active is not None and active["sha256"] == model.sha256


@dataclass
class PrivateSetup:
    """A stoppable broker with its own observer and harness."""

    broker: PrivateMosquitto
    observer: Observer
    harness: Harness

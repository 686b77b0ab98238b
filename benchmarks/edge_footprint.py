"""Edge footprint: RSS, start-to-ready, int8 vs fp32 size, latency and accuracy on the edge code path.

Run: .venv/bin/python benchmarks/edge_footprint.py
Peer: the same model in fp32 (skl2onnx export) against its int8 onnxruntime dynamic quantisation,
both measured in this run through edge_agent's InferenceEngine. Start-to-ready and RSS are measured
on the real `python -m edge_agent` process (subprocess, state dir with the int8 model committed),
from Popen until GET /healthz answers ready.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.inference import InferenceEngine, ModelRuntime, make_session  # noqa: E402
from edge_agent.slots import SlotStore  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "edge_footprint.json"
TARGETS = {"rss_mb": 80.0, "start_to_ready_s": 1.0, "size_ratio": 3.5}


def build_models(work: Path) -> tuple[bytes, bytes, np.ndarray, np.ndarray, int]:
    """Train StandardScaler + MLP(256, 256) on digits; export fp32 and quantise to int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data.astype(np.float32), digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((256, 256), max_iter=300, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(x_train, y_train)
    fp32 = convert_sklearn(pipe, initial_types=[("input", FloatTensorType([None, 64]))],
                           options={"zipmap": False}).SerializeToString()
    (work / "fp32.onnx").write_bytes(fp32)
    quantize_dynamic(work / "fp32.onnx", work / "int8.onnx", weight_type=QuantType.QInt8)
    return fp32, (work / "int8.onnx").read_bytes(), x_test, y_test, len(x_train)


def latency_and_accuracy(data: bytes, x_test: np.ndarray, y_test: np.ndarray, runs: int) -> dict[str, float]:
    """Measure single-row predict latency through InferenceEngine, and held-out accuracy."""
    engine = InferenceEngine()
    engine.swap(ModelRuntime(make_session(data), {}))
    labels, _ = engine.predict(x_test)
    accuracy = float(np.mean(labels == y_test))
    rows = [x_test[i : i + 1] for i in range(len(x_test))]
    for row in rows[:50]:
        engine.predict(row)
    timings = []
    for i in range(runs):
        started = time.perf_counter()
        engine.predict(rows[i % len(rows)])
        timings.append((time.perf_counter() - started) * 1e6)
    timings.sort()
    return {"accuracy": accuracy, "p50_us": timings[len(timings) // 2],
            "p99_us": timings[int(len(timings) * 0.99)]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """Return user+system CPU seconds used so far by pid (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_agent_once(state_dir: Path, key_b64: str, x_row: list[float]) -> dict[str, float]:
    """Start the real agent process; time Popen -> /healthz ready; read RSS after 200 predictions."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGELOOP_EDGE_DEVICE_ID": "bench-0001",
           "EDGELOOP_EDGE_DEVICE_TOKEN": "t", "EDGELOOP_EDGE_BROKER_URL": "mqtt://127.0.0.1:1883",
           "EDGELOOP_EDGE_CONTROL_PLANE_URL": "http://127.0.0.1:8000", "EDGELOOP_EDGE_STATE_DIR": str(state_dir),
           "EDGELOOP_EDGE_TRUSTED_PUBLIC_KEY": key_b64, "EDGELOOP_EDGE_PREDICT_PORT": str(port)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "edge_agent", "--log-level", "ERROR"], env=env)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if json.load(response)["ready"]:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 30:
                raise RuntimeError("agent did not become ready")
            time.sleep(0.005)
        ready_s = time.perf_counter() - started
        ready_cpu_s = cpu_s(process.pid)
        body = json.dumps({"inputs": [x_row]}).encode()
        for _ in range(200):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        return {"start_to_ready_s": ready_s, "start_cpu_s": ready_cpu_s, "rss_mb": rss_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    """Run all measurements, print the table and write the JSON results."""
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32, int8, x_test, y_test, n_train = build_models(work)
        fp32_stats = latency_and_accuracy(fp32, x_test, y_test, runs=3000)
        int8_stats = latency_and_accuracy(int8, x_test, y_test, runs=3000)
        store = SlotStore(work / "state")
        store.model_path("a").write_bytes(int8)
        store.commit({"slot": "a", "sequence": 1, "sha256": hashlib.sha256(int8).hexdigest(),
                      "model": {"name": "digits-mlp", "version": 1}, "rollout_id": None})
        key = Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        runs = [start_agent_once(work / "state", base64.b64encode(key).decode(), x_test[0].tolist())
                for _ in range(5)]
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": load_at_start},
        "model": {"pipeline": "StandardScaler + MLPClassifier(256, 256)", "dataset": "sklearn digits",
                  "train_rows": n_train, "test_rows": len(x_test)},
        "fp32_bytes": len(fp32), "int8_bytes": len(int8), "size_ratio": len(fp32) / len(int8),
        "fp32": fp32_stats, "int8": int8_stats,
        "accuracy_delta_int8_minus_fp32": int8_stats["accuracy"] - fp32_stats["accuracy"],
        "start_to_ready_s_median": statistics.median(r["start_to_ready_s"] for r in runs),
        "start_to_ready_s_runs": [r["start_to_ready_s"] for r in runs],
        "start_cpu_s_median": statistics.median(r["start_cpu_s"] for r in runs),
        "rss_mb_median": statistics.median(r["rss_mb"] for r in runs),
        "targets": TARGETS,
    }
    results.update({
        "name": "edge_footprint", "target": "int8 >= 3.5x smaller; RSS <= 80 MB; start-to-ready <= 1 s",
        "measured": round(results["size_ratio"], 2), "peer": "the fp32 model on the same agent", "ratio": None,
        "pass": None, "config": {"model": results["model"], "onnxruntime": "1 intra-op thread, CPU"},
        "checks": [
            {"name": "int8 vs fp32 size ratio", "target": f">= {TARGETS['size_ratio']}x", "unit": "x",
             "measured": round(results["size_ratio"], 2), "peer": None, "ratio": None,
             "pass": results["size_ratio"] >= TARGETS["size_ratio"]},
            {"name": "agent RSS with the int8 model loaded", "target": f"<= {TARGETS['rss_mb']} MB", "unit": "MB",
             "measured": round(results["rss_mb_median"], 1), "peer": None, "ratio": None,
             "pass": results["rss_mb_median"] <= TARGETS["rss_mb"]},
            {"name": "agent start-to-ready (wall; CPU in the JSON)", "target": f"<= {TARGETS['start_to_ready_s']} s",
             "unit": "s", "measured": round(results["start_to_ready_s_median"], 3), "peer": None, "ratio": None,
             "pass": results["start_to_ready_s_median"] <= TARGETS["start_to_ready_s"]},
            {"name": "1-row p50 latency, int8 (peer: fp32)", "target": "-", "unit": "us",
             "measured": round(int8_stats["p50_us"], 1), "peer": round(fp32_stats["p50_us"], 1),
             "ratio": round(int8_stats["p50_us"] / fp32_stats["p50_us"], 2), "pass": None},
            {"name": "held-out accuracy delta, int8 - fp32", "target": "-", "unit": "",
             "measured": round(results["accuracy_delta_int8_minus_fp32"], 4), "peer": None, "ratio": None,
             "pass": None},
        ],
    })
    results["pass"] = all(c["pass"] for c in results["checks"] if c["pass"] is not None)
    rows = [
        ("model size (KB)", f"{len(fp32) / 1024:.1f}", f"{len(int8) / 1024:.1f}",
         f"{results['size_ratio']:.2f}x smaller", f">= {TARGETS['size_ratio']}x"),
        ("held-out accuracy", f"{fp32_stats['accuracy']:.4f}", f"{int8_stats['accuracy']:.4f}",
         f"{results['accuracy_delta_int8_minus_fp32']:+.4f}", ""),
        ("1-row p50 latency (us)", f"{fp32_stats['p50_us']:.1f}", f"{int8_stats['p50_us']:.1f}",
         f"{fp32_stats['p50_us'] / int8_stats['p50_us']:.2f}x", ""),
        ("1-row p99 latency (us)", f"{fp32_stats['p99_us']:.1f}", f"{int8_stats['p99_us']:.1f}",
         f"{fp32_stats['p99_us'] / int8_stats['p99_us']:.2f}x", ""),
        ("agent RSS, int8 loaded (MB)", "", f"{results['rss_mb_median']:.1f}", "", f"<= {TARGETS['rss_mb']}"),
        ("agent start-to-ready, wall (s)", "", f"{results['start_to_ready_s_median']:.3f}", "",
         f"<= {TARGETS['start_to_ready_s']}"),
        ("agent start-to-ready, CPU (s)", "", f"{results['start_cpu_s_median']:.3f}", "", ""),
    ]
    header = ("metric", "fp32 (peer)", "int8 (edge)", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    load = results["machine"]["load_avg"]
    print(f"\nload average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()

"""The edge agent must run on a device that has only its four runtime dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Every module in the package, found on disk, so a new file cannot slip past this test.
MODULES = sorted(f"edge_agent.{path.stem}" for path in (REPO / "edge_agent").glob("*.py") if path.stem != "__init__")
FORBIDDEN = {"fastapi", "sqlalchemy", "pydantic", "pydantic_core", "control_plane", "scipy", "sklearn",
             "starlette", "agents", "skl2onnx", "onnx", "httpx", "requests"}
# numpy, onnxruntime, paho, cryptography (+ its compiled backends and its optional bcrypt import),
# plus the interpreter's own import hooks for the editable install.
ALLOWED = {"numpy", "onnxruntime", "paho", "cryptography", "_cffi_backend", "_openssl", "bcrypt", "edge_agent",
           "__main__", "_distutils_hack", "__editable___edgeloop_0_1_0_finder"}


def test_edge_modules_import_only_their_runtime_dependencies() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                            timeout=60)
    third_party = set(json.loads(result.stdout))
    assert not third_party & FORBIDDEN
    assert third_party <= ALLOWED, third_party - ALLOWED
    assert {"numpy", "onnxruntime", "paho", "cryptography", "edge_agent"} <= third_party
    assert {"edge_agent.telemetry", "edge_agent.outbox", "edge_agent.ota"} <= set(MODULES)

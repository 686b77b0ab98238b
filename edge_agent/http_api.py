"""Optional loopback HTTP endpoint: POST /predict and GET /healthz (stdlib http.server)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from edge_agent.inference import InferenceEngine, NoModelLoaded

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


def _handler(engine: InferenceEngine, describe: Callable[[], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class PredictHandler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, {"ready": engine.runtime is not None, **describe()})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._reply(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._reply(413 if length > MAX_BODY else 400, {"error": "body size"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                inputs = np.asarray(body["inputs"], dtype=np.float32)
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": "expected JSON {\"inputs\": [[...], ...]}"})
                return
            try:
                labels, scores = engine.predict(inputs)
            except NoModelLoaded as exc:
                self._reply(503, {"error": str(exc)})
                return
            except Exception as exc:
                self._reply(400, {"error": f"inference failed: {exc}"})
                return
            listed_scores = None if scores is None else scores.tolist()
            self._reply(200, {"labels": labels.tolist(), "scores": listed_scores, **describe()})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return PredictHandler


def serve_predict(
    engine: InferenceEngine, port: int, describe: Callable[[], dict[str, Any]], host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Start the endpoint on a daemon thread (loopback only by default) and return the server."""
    server = ThreadingHTTPServer((host, port), _handler(engine, describe))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="edge-http", daemon=True).start()
    return server

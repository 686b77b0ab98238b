"""A large body without a token: how long until its answer, and how /healthz answers meanwhile.

Starts the control plane (uvicorn, one worker, SQLite) from a source tree, sends ``--mb`` MB of JSON to
``POST --path`` (default /api/v1/models) with no token as fast as the socket takes it, and probes ``/healthz``
every 50 ms on another connection until the big request is answered. Run it against an old checkout to compare:
``python benchmarks/unauthenticated_body.py --tree /path/to/old/checkout``.

Usage: ``python benchmarks/unauthenticated_body.py [--mb 57.6] [--path /api/v1/artifacts] [--tree DIR] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys, uvicorn
from control_plane.db.migrate import upgrade
from control_plane.main import create_app
from control_plane.settings import Settings
settings = Settings(data_dir=sys.argv[1])
upgrade(settings.resolved_database_url)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    """Return a free TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def big_request(port: int, megabytes: float, path: str) -> tuple[float, int, int]:
    """Send the body without a token; return (seconds to the answer, status, bytes sent before it)."""
    size = int(megabytes * 1_000_000)
    # Valid JSON (a model whose tags hold millions of small numbers), so a server that reads it also parses it:
    # the costly shape for a JSON parser, as a hostile client would choose.
    head, tail = b'{"name": "m", "tags": {"a": [', b'0]}}'
    filler = b"0," * (512 * 1024)
    sent = 0
    answered = threading.Event()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        start = time.perf_counter()
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {size}\r\n\r\n".encode())

        def send_body() -> None:
            nonlocal sent
            try:
                connection.sendall(head)
                sent += len(head)
                while sent < size - len(tail) and not answered.is_set():
                    chunk = filler[: min(len(filler), size - len(tail) - sent)]
                    connection.sendall(chunk)
                    sent += len(chunk)
                if not answered.is_set():
                    connection.sendall(tail)
                    sent += len(tail)
            except OSError:
                pass  # the server answered and closed: it needed no more of the body

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        response = b""
        while b"\r\n" not in response:
            piece = connection.recv(65536)
            if not piece:
                break
            response += piece
        elapsed = time.perf_counter() - start
        answered.set()
        status = int(response.split(b" ", 2)[1]) if response else 0
        sent_at_answer = sent
    sender.join(timeout=5)
    return elapsed, status, sent_at_answer


def run(tree: Path, megabytes: float, path: str) -> dict[str, object]:
    """Serve ``tree`` and measure one big unauthenticated request with /healthz probes alongside."""
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="edgeloop-bench-")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, data_dir, str(port)], cwd=tree, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        probes: list[float] = []
        done = threading.Event()

        def probe() -> None:
            with httpx.Client(timeout=120) as client:
                while True:  # at least one probe, even when the big request is answered at once
                    start = time.perf_counter()
                    client.get(f"http://127.0.0.1:{port}/healthz")
                    probes.append((time.perf_counter() - start) * 1000)
                    if done.is_set():
                        return
                    time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        elapsed, status, sent = big_request(port, megabytes, path)
        done.set()
        prober.join(timeout=130)
        return {"tree": str(tree), "path": path, "body_mb": megabytes, "status": status, "answer_s": round(elapsed, 3),
                "body_bytes_sent_before_answer": sent, "healthz_probes": len(probes),
                "healthz_p50_ms": round(statistics.median(probes), 1) if probes else None,
                "healthz_max_ms": round(max(probes), 1) if probes else None}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    """Parse arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=57.6)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to serve (default: this one)")
    parser.add_argument("--path", default="/api/v1/models",
                        help="route to post to (/api/v1/artifacts: under the artifact limit, so only the token check"
                             " can refuse it)")
    parser.add_argument("--quick", action="store_true", help="a 10 MB body")
    args = parser.parse_args()
    result = run(args.tree.resolve(), 10.0 if args.quick else args.mb, args.path)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Registry latency at a fixed request rate: Edgeloop vs an MLflow tracking server, same machine, same run.

Open loop: request k is *scheduled* at ``t0 + k / rate`` and its latency is measured from that scheduled time,
so a slow response delays the requests behind it and that delay is counted (no coordinated omission).
Both sides get the same client (one ``httpx.Client``, one reused keep-alive connection), the same request
pattern per model (create model, create version, get version, set alias, get by alias) and one server worker.
The sides run in alternating rounds so drifting background load hits both alike.

Usage: ``python benchmarks/registry_latency.py [--rate 20] [--models 200] [--rounds 2] [--no-postgres]``
MLflow comes from ``benchmarks/.venvs/mlflow`` (``python -m venv benchmarks/.venvs/mlflow &&
benchmarks/.venvs/mlflow/bin/pip install mlflow``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

NAME = "registry_latency"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
MLFLOW_VENV = ROOT / "benchmarks" / ".venvs" / "mlflow"
PG_ADMIN_URL = os.environ.get("EDGELOOP_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_RATIO = 0.5
OPERATIONS = ("create_model", "create_version", "get_version", "set_alias", "get_alias")
ALIAS = "champion"


@dataclass
class Request:
    """One HTTP call of the workload, already translated to one side's API."""

    op: str
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None


class Api:
    """How one side spells the five registry calls."""

    name = "base"
    headers: dict[str, str]

    def calls(self, model: str) -> list[Request]:
        raise NotImplementedError


class EdgeloopApi(Api):
    """Edgeloop's /api/v1 registry (bearer token: every request is authenticated against the database)."""

    name = "edgeloop"

    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}

    def calls(self, model: str) -> list[Request]:
        base = f"/api/v1/models/{model}"
        return [
            Request("create_model", "POST", "/api/v1/models", body={"name": model}),
            Request("create_version", "POST", f"{base}/versions", body={"metrics": {"acc": 0.9}}),
            Request("get_version", "GET", f"{base}/versions/1"),
            Request("set_alias", "PUT", f"{base}/aliases/{ALIAS}", body={"version": 1}),
            Request("get_alias", "GET", f"{base}/aliases/{ALIAS}"),
        ]


class MlflowApi(Api):
    """MLflow's REST registry API (no authentication configured, as in its default server)."""

    name = "mlflow"
    headers: dict[str, str] = {}

    def calls(self, model: str) -> list[Request]:
        api = "/api/2.0/mlflow"
        return [
            Request("create_model", "POST", f"{api}/registered-models/create", body={"name": model}),
            Request(
                "create_version",
                "POST",
                f"{api}/model-versions/create",
                body={"name": model, "source": f"s3://edgeloop-bench/{model}/1"},
            ),
            Request("get_version", "GET", f"{api}/model-versions/get", params={"name": model, "version": "1"}),
            Request(
                "set_alias",
                "POST",
                f"{api}/registered-models/alias",
                body={"name": model, "alias": ALIAS, "version": "1"},
            ),
            Request("get_alias", "GET", f"{api}/registered-models/alias", params={"name": model, "alias": ALIAS}),
        ]


@dataclass
class Samples:
    """Latencies (from the scheduled start) and service times (from the actual start), in seconds, per op."""

    latency: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    service: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    late_starts: int = 0
    wall_s: float = 0.0
    requests: int = 0
    server_cpu_s: float = 0.0


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200, or fail with the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def group_cpu_seconds(pgid: int) -> float:
    """Return user+system CPU seconds of every live process in a process group (server and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ... utime is field 14 and stime 15 of the full line.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], health_url: str, log: Path) -> Iterator[int]:
    """Run a server (in its own process group) for the block and yield its group id; then stop it."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(health_url, process, log)
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def edgeloop_server(data_dir: Path, port: int, database_url: str | None) -> contextlib.AbstractContextManager[int]:
    """Start ``edgeloop serve`` (one uvicorn worker) on ``port``."""
    env = {**os.environ, "EDGELOOP_DATA_DIR": str(data_dir), "EDGELOOP_PORT": str(port), "EDGELOOP_HOST": "127.0.0.1"}
    env.pop("EDGELOOP_DATABASE_URL", None)
    if database_url:
        env["EDGELOOP_DATABASE_URL"] = database_url
    edgeloop = Path(sys.executable).parent / "edgeloop"
    return server(
        [str(edgeloop), "serve"], env, f"http://127.0.0.1:{port}/readyz", data_dir.parent / f"edgeloop-{port}.log"
    )


def mlflow_server(work: Path, port: int) -> contextlib.AbstractContextManager[int]:
    """Start ``mlflow server --workers 1`` on a SQLite backend on ``port``."""
    mlflow = MLFLOW_VENV / "bin" / "mlflow"
    if not mlflow.exists():
        raise SystemExit(f"MLflow not installed: python -m venv {MLFLOW_VENV} && {MLFLOW_VENV}/bin/pip install mlflow")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [
        str(mlflow),
        "server",
        "--backend-store-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--default-artifact-root",
        str(work / "mlflow-artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return server(command, env, f"http://127.0.0.1:{port}/health", work / f"mlflow-{port}.log")


def run_schedule(client: httpx.Client, api: Api, models: list[str], rate: float, samples: Samples | None) -> None:
    """Issue every model's five calls on a fixed schedule; record into ``samples`` unless it is a warm-up."""
    requests = [request for model in models for request in api.calls(model)]
    interval = 1.0 / rate
    started = time.perf_counter()
    for index, request in enumerate(requests):
        scheduled = started + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif samples is not None and delay < -0.001:
            samples.late_starts += 1
        sent = time.perf_counter()
        response = client.request(
            request.method, request.path, params=request.params, json=request.body, headers=api.headers
        )
        done = time.perf_counter()
        if response.status_code >= 300:
            raise RuntimeError(f"{api.name} {request.method} {request.path}: {response.status_code} {response.text}")
        if samples is not None:
            samples.latency[request.op].append(done - scheduled)
            samples.service[request.op].append(done - sent)
    if samples is not None:
        samples.wall_s += time.perf_counter() - started
        samples.requests += len(requests)


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarise(samples: Samples) -> dict[str, Any]:
    """Return p50/p99 (ms) of latency and service time per op and over all ops."""

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(1000 * percentile(values, 50), 2),
            "p99_ms": round(1000 * percentile(values, 99), 2),
            "max_ms": round(1000 * max(values), 2),
            "n": len(values),
        }

    summary: dict[str, Any] = {op: stats(samples.latency[op]) for op in OPERATIONS}
    summary["all"] = stats([v for op in OPERATIONS for v in samples.latency[op]])
    summary["service_time"] = {op: stats(samples.service[op]) for op in OPERATIONS}
    # Server CPU per request does not depend on how busy the rest of the machine is, unlike latency.
    summary["server_cpu_ms_per_request"] = round(1000 * samples.server_cpu_s / max(1, samples.requests), 2)
    summary["achieved_rate"] = round(samples.requests / samples.wall_s, 2) if samples.wall_s else 0.0
    summary["late_starts"] = samples.late_starts
    # Late starts mean the previous response took longer than the interval: queueing, not service time.
    summary["saturated"] = samples.late_starts > 0.05 * max(1, samples.requests)
    return summary


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """Create a throw-away PostgreSQL database; yield None when the server is unreachable."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    name = f"edgeloop_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        print(f"PostgreSQL unavailable ({type(exc).__name__}); skipping the PostgreSQL side")
        admin.dispose()
        yield None
        return
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Side:
    """One system under test: its API spelling, base URL and collected samples."""

    label: str
    api_factory: Callable[[], Api]
    base_url: str
    pgid: int
    samples: Samples = field(default_factory=Samples)


def measure(sides: list[Side], models: int, rounds: int, warmup: int, rate: float) -> None:
    """Warm each side up, then run ``rounds`` alternating rounds of ``models / rounds`` models per side."""
    run_id = uuid.uuid4().hex[:6]
    per_round = max(1, models // rounds)
    for side in sides:
        api = side.api_factory()
        with httpx.Client(base_url=side.base_url, timeout=30) as client:
            run_schedule(client, api, [f"warm-{run_id}-{i}" for i in range(warmup)], rate, None)
    for round_index in range(rounds):
        order = sides if round_index % 2 == 0 else list(reversed(sides))
        for side in order:
            api = side.api_factory()
            names = [f"bench-{run_id}-r{round_index}-{i}" for i in range(per_round)]
            # One client per round and side: one keep-alive connection, reused for every call.
            with httpx.Client(
                base_url=side.base_url, timeout=30, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
            ) as client:
                cpu_before = group_cpu_seconds(side.pgid)
                run_schedule(client, api, names, rate, side.samples)
                side.samples.server_cpu_s += group_cpu_seconds(side.pgid) - cpu_before
            print(f"  round {round_index + 1}/{rounds} {side.label}: {len(names) * len(OPERATIONS)} requests")


def build_result(
    summaries: dict[str, dict[str, Any]], args: argparse.Namespace, config: dict[str, Any]
) -> dict[str, Any]:
    """Assemble the result document in the shared benchmarks/results convention."""
    mlflow = summaries["mlflow"]
    checks = []
    for op in (*OPERATIONS, "all"):
        ours, theirs = summaries["edgeloop_sqlite"][op]["p99_ms"], mlflow[op]["p99_ms"]
        ratio = ours / theirs
        checks.append(
            {
                "name": f"p99 {op.replace('_', ' ')} (edgeloop sqlite vs mlflow)",
                "target": f"<= {TARGET_RATIO}x MLflow",
                "measured": ours,
                "peer": theirs,
                "unit": "ms",
                "ratio": round(ratio, 3),
                "pass": ratio <= TARGET_RATIO,
            }
        )
    overall = checks[-1]
    ours_cpu = summaries["edgeloop_sqlite"]["server_cpu_ms_per_request"]
    theirs_cpu = mlflow["server_cpu_ms_per_request"]
    checks.append({"name": "server CPU per request, all calls (context: independent of machine load)",
                   "target": None, "measured": ours_cpu, "peer": theirs_cpu, "unit": "ms",
                   "ratio": round(ours_cpu / theirs_cpu, 3) if theirs_cpu else None, "pass": None})
    started_load = config.pop("_load_at_start")
    result: dict[str, Any] = {
        "name": NAME,
        "title": f"Registry latency at a fixed {args.rate:g} req/s (open loop), Edgeloop vs MLflow",
        "target": f"Edgeloop p99 <= {TARGET_RATIO}x MLflow p99 (all five registry calls)",
        "measured": f"p99 {overall['measured']:.1f} ms (p50 {summaries['edgeloop_sqlite']['all']['p50_ms']:.1f} ms)",
        "peer": f"MLflow p99 {overall['peer']:.1f} ms (p50 {mlflow['all']['p50_ms']:.1f} ms)",
        "ratio": overall["ratio"],
        "ratio_note": "Edgeloop (SQLite) p99 over all calls divided by MLflow's",
        "pass": overall["pass"],
        "checks": checks,
        "config": config,
        "details": summaries,
        "host": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "load_avg_1m_at_start": started_load,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if "edgeloop_postgres" in summaries:
        pg = summaries["edgeloop_postgres"]["all"]
        result["postgres"] = {
            "p50_ms": pg["p50_ms"],
            "p99_ms": pg["p99_ms"],
            "ratio_p99_vs_mlflow": round(pg["p99_ms"] / mlflow["all"]["p99_ms"], 3),
        }
    return result


def print_table(result: dict[str, Any]) -> None:
    """Print p50/p99 per call for every side, with Edgeloop/MLflow ratios."""
    details = result["details"]
    labels = [label for label in ("edgeloop_sqlite", "edgeloop_postgres", "mlflow") if label in details]
    print(f"\n{result['title']}  (latency from the scheduled send time, ms)")
    header = f"{'call':<16}" + "".join(f"{label + ' p50':>22}{'p99':>9}" for label in labels)
    header += f"{'p99 ratio sqlite/mlflow':>26}"
    if "edgeloop_postgres" in details:
        header += f"{'pg/mlflow':>11}"
    print(header)
    for op in (*OPERATIONS, "all"):
        line = f"{op:<16}" + "".join(
            f"{details[label][op]['p50_ms']:>22.2f}{details[label][op]['p99_ms']:>9.2f}" for label in labels
        )
        line += f"{details['edgeloop_sqlite'][op]['p99_ms'] / details['mlflow'][op]['p99_ms']:>26.2f}"
        if "edgeloop_postgres" in details:
            line += f"{details['edgeloop_postgres'][op]['p99_ms'] / details['mlflow'][op]['p99_ms']:>11.2f}"
        print(line)
    print("server CPU ms/request: " + ", ".join(f"{label} {details[label]['server_cpu_ms_per_request']}"
                                                 for label in labels))
    for label in labels:
        flag = "  SATURATED: queueing dominates" if details[label]["saturated"] else ""
        print(
            f"{label}: achieved {details[label]['achieved_rate']} req/s, late starts "
            f"{details[label]['late_starts']}{flag}"
        )
    print(f"target {result['target']}: {'PASS' if result['pass'] else 'FAIL'} (ratio {result['ratio']:.2f})")


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run the schedule, print the table and write benchmarks/results/registry_latency.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 10/s keeps both servers well under capacity on a quiet machine (MLflow ~16-32 ms per call), so the
    # numbers compare service latency plus honest queueing, not two saturated queues.
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second, per side")
    parser.add_argument("--models", type=int, default=150, help="models per side (5 requests each)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds the models are split into")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured models per side first")
    parser.add_argument("--no-postgres", action="store_true", help="skip the Edgeloop-on-PostgreSQL side")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    args = parser.parse_args(argv)

    started_load = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="edgeloop-registry-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            edge_port, mlflow_port = free_port(), free_port()
            edge_pgid = stack.enter_context(edgeloop_server(work / "edgeloop", edge_port, None))
            edge_token = (work / "edgeloop" / "admin.token").read_text().strip()
            mlflow_pgid = stack.enter_context(mlflow_server(work, mlflow_port))
            sides = [
                Side("edgeloop_sqlite", lambda: EdgeloopApi(edge_token), f"http://127.0.0.1:{edge_port}", edge_pgid),
                Side("mlflow", MlflowApi, f"http://127.0.0.1:{mlflow_port}", mlflow_pgid),
            ]
            pg_url = None if args.no_postgres else stack.enter_context(postgres_database())
            if pg_url:
                pg_port = free_port()
                pg_pgid = stack.enter_context(edgeloop_server(work / "edgeloop-pg", pg_port, pg_url))
                pg_token = (work / "edgeloop-pg" / "admin.token").read_text().strip()
                # Only the Edgeloop process group's CPU is counted, not the PostgreSQL server's.
                sides.insert(1, Side("edgeloop_postgres", lambda: EdgeloopApi(pg_token),
                                     f"http://127.0.0.1:{pg_port}", pg_pgid))
            print(f"servers up; {args.models} models x 5 calls per side at {args.rate:g} req/s, {args.rounds} rounds")
            measure(sides, args.models, args.rounds, args.warmup, args.rate)
        summaries = {side.label: summarise(side.samples) for side in sides}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mlflow_version = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    config = {
        "rate_per_s": args.rate,
        "models_per_side": args.models,
        "requests_per_side": args.models * 5,
        "rounds": args.rounds,
        "warmup_models": args.warmup,
        "pattern": "per model: create model, create version, get version 1, set alias champion->1, get by alias",
        "client": f"httpx {httpx.__version__}, one Client per side and round, 1 keep-alive connection, HTTP/1.1, "
        "open-loop schedule, latency measured from the scheduled send time",
        "edgeloop": "edgeloop serve: uvicorn, 1 worker, SQLite WAL file (synchronous=NORMAL); bearer admin token "
        "checked against the database on every request; every write audited (hash chain) in the same "
        "transaction",
        "edgeloop_postgres": "same server with EDGELOOP_DATABASE_URL on local PostgreSQL"
        if "edgeloop_postgres" in summaries
        else "not run",
        "mlflow": f"mlflow {mlflow_version} server --workers 1 --backend-store-uri sqlite:///... "
        "(MLFLOW_DISABLE_TELEMETRY=true, no auth); version source s3://... (not dereferenced)",
        "machine_note": "both servers and the client share the same 2 cores; other developers' jobs may run too",
        "_load_at_start": started_load,
    }
    result = build_result(summaries, args, config)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

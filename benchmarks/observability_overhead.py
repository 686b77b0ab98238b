"""Request-path cost of the observability middleware (request id, route-template latency histogram, access line).

Two apps on one SQLite database, identical except that one has the RequestObservability middleware removed; each
serves GET /healthz and an authenticated GET /api/v1/models (viewer token, one indexed token lookup and one list
query). Requests go through httpx's in-process ASGI transport, sequentially, so the numbers are the app's own cost
without sockets; the sides alternate in rounds so background load hits both alike. The access line is emitted to
a handler at INFO (as `edgeloop serve --log-format json` would) for the "with" side.

Usage: ``python benchmarks/observability_overhead.py [--quick] [--requests 2000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from control_plane.auth import service as auth_service  # noqa: E402
from control_plane.auth.roles import Role  # noqa: E402
from control_plane.auth.schemas import TokenCreate  # noqa: E402
from control_plane.db.migrate import upgrade  # noqa: E402
from control_plane.db.session import Database  # noqa: E402
from control_plane.main import create_app  # noqa: E402
from control_plane.observability.log_format import JsonFormatter  # noqa: E402
from control_plane.observability.request_context import RequestIdFilter, RequestObservability  # noqa: E402
from control_plane.settings import Settings  # noqa: E402

NAME = "observability_overhead"
RESULTS = ROOT / "benchmarks" / "results" / f"{NAME}.json"
SIDES = ("with", "no access line", "without")
PATHS = {"healthz": "/healthz", "authenticated read": "/api/v1/models"}


async def rate(client: httpx.AsyncClient, path: str, headers: dict[str, str], requests: int) -> tuple[float, float]:
    """Send ``requests`` sequential GETs; return requests per second (wall) and CPU microseconds per request."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(requests):
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return requests / wall, cpu / requests * 1e6


async def measure(requests: int, rounds: int, work: Path) -> dict[str, Any]:
    url = f"sqlite:///{work / 'edgeloop.db'}"
    upgrade(url)
    database = Database(url)
    with database.transaction() as session:
        _, token = auth_service.create_token(session=session, actor="bench",
                                             request=TokenCreate(name="bench", role=Role.VIEWER))
    database.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    apps = {side: create_app(Settings(data_dir=work / "data", database_url=url, audit_checkpoint_seconds=3600,
                                      access_log=side != "no access line"))
            for side in SIDES}
    apps["without"].user_middleware = [m for m in apps["without"].user_middleware
                                       if m.cls is not RequestObservability]
    sink = logging.StreamHandler(io.StringIO())
    sink.setFormatter(JsonFormatter())
    sink.addFilter(RequestIdFilter())
    access = logging.getLogger("control_plane.access")
    access.addHandler(sink)
    access.setLevel(logging.INFO)
    rates: dict[str, dict[str, list[float]]] = {name: {side: [] for side in SIDES} for name in PATHS}
    cpu_us: dict[str, dict[str, list[float]]] = {name: {side: [] for side in SIDES} for name in PATHS}
    clients = {}
    for side, app in apps.items():
        clients[side] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        for path in PATHS.values():  # warm-up: routes, statements, pools
            for side in apps:
                await rate(clients[side], path, headers, 200)
        for round_index in range(rounds):
            order = SIDES if round_index % 2 == 0 else SIDES[::-1]
            for name, path in PATHS.items():
                for side in order:
                    per_second, cpu = await rate(clients[side], path, headers, requests)
                    rates[name][side].append(per_second)
                    cpu_us[name][side].append(cpu)
    for client in clients.values():
        await client.aclose()
    access.removeHandler(sink)
    lines = sink.stream.getvalue().count("\n")
    return {"rates": rates, "cpu_us": cpu_us, "access_lines": lines}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per batch")
    parser.add_argument("--rounds", type=int, default=25, help="alternating batches per side and path")
    parser.add_argument("--quick", action="store_true", help="100 requests x 7 rounds")
    args = parser.parse_args(argv)
    requests, rounds = (100, 7) if args.quick else (args.requests, args.rounds)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgeloop-obs-bench-") as work:
        measured = asyncio.run(measure(requests, rounds, Path(work)))
    checks = []
    for name, sides in measured["rates"].items():
        with_mw, without = statistics.median(sides["with"]), statistics.median(sides["without"])
        overhead_us = (1 / with_mw - 1 / without) * 1e6
        cpu = measured["cpu_us"][name]
        cpu_with, cpu_without = statistics.median(cpu["with"]), statistics.median(cpu["without"])
        checks.append({"name": f"{name}: requests/s with middleware (peer: without), median of {rounds} rounds",
                       "target": "<= 10% fewer requests/s", "measured": round(with_mw, 1), "peer": round(without, 1),
                       "unit": "req/s", "ratio": round(with_mw / without, 3), "pass": with_mw / without >= 0.9,
                       "overhead_us_per_request": round(overhead_us, 1),
                       "cpu_us_per_request_with": round(cpu_with, 1),
                       "cpu_us_per_request_without": round(cpu_without, 1),
                       "cpu_overhead_us_per_request": round(cpu_with - cpu_without, 1),
                       # Paired per round (same background load), then the median: steadier than two medians.
                       "paired_cpu_overhead_us_median": round(statistics.median(
                           a - b for a, b in zip(cpu["with"], cpu["without"], strict=True)), 1),
                       "paired_cpu_overhead_no_access_line_us_median": round(statistics.median(
                           a - b for a, b in zip(cpu["no access line"], cpu["without"], strict=True)), 1),
                       "no_access_line_req_s": round(statistics.median(sides["no access line"]), 1),
                       "no_access_line_cpu_us_per_request": round(statistics.median(cpu["no access line"]), 1),
                       "rounds_with": [round(r, 1) for r in sides["with"]],
                       "rounds_without": [round(r, 1) for r in sides["without"]]})
    result = {
        "name": NAME, "title": "Observability middleware overhead on the request path",
        "target": "<= 10% fewer requests/s than the same app without it",
        "measured": checks[1]["measured"], "peer": checks[1]["peer"], "ratio": checks[1]["ratio"],
        "ratio_note": "with / without (1.0 = no cost)", "pass": all(c["pass"] for c in checks), "checks": checks,
        "config": {"requests_per_round": requests, "rounds": rounds, "transport": "httpx ASGITransport, sequential",
                   "database": "SQLite (WAL)", "access_log": "JSON formatter, INFO, in-memory stream",
                   "access_lines_written": measured["access_lines"]},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(load_start, 2),
                 "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for check in checks:
        print(f"{check['name']}: {check['measured']} vs {check['peer']} req/s, ratio {check['ratio']},"
              f" wall +{check['overhead_us_per_request']} us/request; CPU {check['cpu_us_per_request_with']} vs"
              f" {check['cpu_us_per_request_without']} us/request; without the access line"
              f" {check['no_access_line_req_s']} req/s, CPU {check['no_access_line_cpu_us_per_request']} us/request;"
              f" paired CPU overhead {check['paired_cpu_overhead_us_median']} us"
              f" ({check['paired_cpu_overhead_no_access_line_us_median']} us without the access line)")
    print(f"load average 1m: {result['host']}")
    return result


if __name__ == "__main__":
    main()

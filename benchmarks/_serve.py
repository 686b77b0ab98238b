"""Shared helpers for benchmarks that run a real `edgeloop serve`: a migrated database, tokens, the process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("EDGELOOP_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """Return a free TCP port on localhost."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_tokens(database_url: str, roles: dict[str, str]) -> dict[str, str]:
    """Migrate the database and create one token per {name: role}."""
    from control_plane.auth import service as auth_service
    from control_plane.auth.roles import Role
    from control_plane.auth.schemas import TokenCreate
    from control_plane.db.migrate import upgrade
    from control_plane.db.session import Database

    upgrade(database_url)
    database = Database(database_url)
    tokens = {}
    try:
        with database.transaction() as session:
            for name, role in roles.items():
                _, tokens[name] = auth_service.create_token(session=session, actor="admin:bench",
                                                            request=TokenCreate(name=name, role=Role(role)))
    finally:
        database.dispose()
    return tokens


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create a scratch PostgreSQL database and drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"edgeloop_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def serve(data_dir: Path, database_url: str, port: int, **env: str) -> Iterator[int]:
    """Run `edgeloop serve` (one uvicorn worker) until the block ends; yield its pid."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "EDGELOOP_DATA_DIR": str(data_dir),
                   "EDGELOOP_DATABASE_URL": database_url, "EDGELOOP_PORT": str(port),
                   "EDGELOOP_AUDIT_CHECKPOINT_SECONDS": "3600", **env}
    log = (data_dir.parent / f"serve-{port}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "control_plane.cli.main", "serve"], env=environment,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"edgeloop serve exited; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("edgeloop serve did not become ready")
            time.sleep(0.2)
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def process_cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Return the q-quantile (0..1) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

"""Two real `edgeloop serve` replicas on one PostgreSQL database: safe concurrent migration, one audit chain."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db import migrate
from control_plane.db.session import Database
from control_plane.mqtt.broker import free_port
from tests.conftest import scratch_postgres_database

# slow: four CLI process starts (two concurrent migrations, two servers) dominate the runtime.
pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EDGELOOP = str(Path(sys.executable).parent / "edgeloop")
MODELS = 40
VERSIONS_PER_MODEL = 4  # 40 model creations + 160 version creations = 200 audited writes


@pytest.fixture
def scale_db_url() -> Iterator[str]:
    """A dedicated, empty PostgreSQL database (not migrated: the replicas do that)."""
    with scratch_postgres_database("edgeloop_scale") as url:
        yield url


@dataclass
class Replica:
    """One `edgeloop serve` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


KEY_ENCRYPTION_KEY = base64.b64encode(os.urandom(32)).decode()


def _env(data_dir: Path, database_url: str, port: int | None = None) -> dict[str, str]:
    env = {**os.environ, "EDGELOOP_DATA_DIR": str(data_dir), "EDGELOOP_DATABASE_URL": database_url,
           "EDGELOOP_HOST": "127.0.0.1", "EDGELOOP_AUDIT_CHECKPOINT_SECONDS": "3600",
           "EDGELOOP_KEY_ENCRYPTION_KEY": KEY_ENCRYPTION_KEY}
    if port is not None:
        env["EDGELOOP_PORT"] = str(port)
    return env


def _wait_ready(replica: Replica, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            pytest.fail(f"replica exited {replica.process.returncode}: {replica.log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{replica.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"replica {replica.base_url} not ready: {replica.log.read_text()[-2000:]}")


@pytest.fixture
def replicas(scale_db_url: str, tmp_path: Path) -> Iterator[tuple[list[Replica], str]]:
    """Start two `edgeloop db upgrade` and two `edgeloop serve` at once on an empty database; yield the replicas.

    All four processes migrate concurrently (`serve` migrates on start too): they must leave exactly the head
    revision and one audit head row. Starting them together also keeps the test's wall time to one CLI start.
    """
    # Each replica has its own data dir: the signing keys come from the database key store, not from a volume.
    env = _env(tmp_path / "data-migrate", scale_db_url)
    upgrades = [subprocess.Popen([EDGELOOP, "db", "upgrade"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT) for _ in range(2)]
    started: list[Replica] = []
    try:
        for index in range(2):
            port = free_port()
            log = tmp_path / f"replica-{index}.log"
            replica_env = _env(tmp_path / f"data-{index}", scale_db_url, port)
            with log.open("wb") as out:
                process = subprocess.Popen([EDGELOOP, "serve"], env=replica_env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            started.append(Replica(process, f"http://127.0.0.1:{port}", log))
        outputs = [process.communicate(timeout=180)[0].decode() for process in upgrades]
        assert [p.returncode for p in upgrades] == [0, 0], outputs
        for replica in started:
            _wait_ready(replica)
        heads = ScriptDirectory.from_config(migrate.alembic_config(scale_db_url)).get_heads()
        assert sorted(migrate.current(scale_db_url)) == sorted(heads)
        engine = create_engine(scale_db_url)
        with engine.connect() as connection:
            head_ids = connection.execute(text("SELECT id FROM audit_head")).scalars().all()
        engine.dispose()
        assert head_ids == [1]  # the head row was seeded exactly once

        # In-process rather than `edgeloop token create`: one CLI start fewer; the CLI has its own tests.
        database = Database(scale_db_url)
        with database.transaction() as session:
            _, token = auth_service.create_token(session=session, actor="admin:test",
                                                 request=TokenCreate(name="scale-test", role=Role.ADMIN))
        database.dispose()
        yield started, token
    finally:
        for replica in started:
            if replica.process.poll() is None:
                os.killpg(replica.process.pid, signal.SIGTERM)
        for replica in started:
            try:
                replica.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(replica.process.pid, signal.SIGKILL)
                replica.process.wait()


def test_two_replicas_share_one_unforked_audit_chain(replicas: tuple[list[Replica], str]) -> None:
    servers, token = replicas
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=r.base_url, headers=headers, timeout=60) for r in servers]
    run = uuid.uuid4().hex[:6]
    names = [f"scale-{run}-{i}" for i in range(MODELS)]

    def create_model(index: int) -> int:
        return clients[index % 2].post("/api/v1/models", json={"name": names[index]}).status_code

    def create_version(job: int) -> tuple[str, int, int]:
        # Consecutive jobs hit the same model through different replicas, so the per-model lock is contended.
        name = names[job // VERSIONS_PER_MODEL]
        response = clients[job % 2].post(f"/api/v1/models/{name}/versions", json={"metrics": {"job": job}})
        return name, response.status_code, response.json().get("version", -1)

    try:
        # Tokens created so far (each replica may bootstrap an admin on first start, plus ours) are audited too.
        baseline = clients[0].get("/api/v1/audit/verify").json()["entries"]
        assert baseline >= 1
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(create_model, range(MODELS))) == {201}
            results = list(pool.map(create_version, range(MODELS * VERSIONS_PER_MODEL)))
        assert {status for _, status, _ in results} == {201}
        for name in names:
            numbers = sorted(version for model, _, version in results if model == name)
            assert numbers == list(range(1, VERSIONS_PER_MODEL + 1)), (name, numbers)

        expected = baseline + MODELS + MODELS * VERSIONS_PER_MODEL
        chains = []
        for client in clients:
            report = client.get("/api/v1/audit/verify").json()
            assert report["ok"] is True, report
            assert report["entries"] == expected and report["head_seq"] == expected, report
            entries = client.get("/api/v1/audit/entries", params={"limit": 1000}).json()
            assert [entry["seq"] for entry in entries] == list(range(1, expected + 1))
            chains.append([(entry["seq"], entry["prev_hash"], entry["hash"]) for entry in entries])
        assert chains[0] == chains[1]
        assert all(chains[0][i][1] == chains[0][i - 1][2] for i in range(1, expected))
        # Separate data dirs, one set of keys: devices get manifests under one key whichever replica signs.
        for path in ("/api/v1/fleet/signing-key", "/api/v1/audit/public-key"):
            assert clients[0].get(path).json() == clients[1].get(path).json()
    finally:
        for client in clients:
            client.close()

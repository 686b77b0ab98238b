"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

Set EDGELOOP_TEST_DATABASES=sqlite to run SQLite only. PostgreSQL tests are skipped (with the reason)
when the server is unreachable on a developer machine, and fail under CI, where it must exist.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser
from sqlalchemy import create_engine, text

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db import all_models  # noqa: F401
from control_plane.db.base import Base
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.settings import Settings

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PG_ADMIN_URL = os.environ.get("EDGELOOP_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ENGINES = [e.strip() for e in os.environ.get("EDGELOOP_TEST_DATABASES", "sqlite,postgresql").split(",") if e.strip()]


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    """Let the Ctrl-C tests' child processes see SIGINT even when the suite runs as a background job.

    A non-interactive shell starts background jobs with SIGINT ignored, children inherit that, and Python does not
    install its KeyboardInterrupt handler over an ignored signal: `edgeloop demo` would never see the test's Ctrl-C.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Remove root handlers a test leaves behind (a CLI console handler keeps CliRunner's stream, closed after)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a migrated SQLite file that each test copies (migrating per test would be slow)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "edgeloop.db"
    upgrade(f"sqlite:///{path}")
    return path


def require_postgres() -> None:
    """Skip when PostgreSQL is unreachable on a developer machine; fail under CI, where it must exist."""
    if not _pg_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL must be reachable on 127.0.0.1:5432 under CI")
        pytest.skip(reason="PostgreSQL not reachable on 127.0.0.1:5432 (set EDGELOOP_TEST_DATABASES=sqlite to silence)")


@contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """Create an empty PostgreSQL database and drop it (forcefully) afterwards; yield its URL."""
    require_postgres()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Create one migrated PostgreSQL database for the session and drop it afterwards."""
    with scratch_postgres_database("edgeloop_test") as url:
        upgrade(url)
        yield url


def _reset_postgres(url: str) -> None:
    # DELETE, not TRUNCATE: on ~30 near-empty tables TRUNCATE costs ~1.7 s per test, DELETE ~0.05 s.
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
        connection.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64})
    engine.dispose()


@pytest.fixture(params=[pytest.param(e, marks=[pytest.mark.postgres] if e == "postgresql" else []) for e in ENGINES])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a freshly migrated, empty database URL (SQLite file or PostgreSQL)."""
    if request.param == "sqlite":
        path = tmp_path / "edgeloop.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _reset_postgres(url)
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings isolated to this test's temp dir and database."""
    return Settings(data_dir=tmp_path / "data", database_url=db_url, audit_checkpoint_seconds=3600,
                    max_artifact_bytes=2 * 1024 * 1024)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    """A Database on the test's URL, for calling services directly."""
    database = Database(settings.resolved_database_url)
    yield database
    database.dispose()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """A control-plane app built from the test settings."""
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTP client with the app's lifespan running."""
    with TestClient(app) as test_client:
        yield test_client


TokenFactory = Callable[..., dict[str, str]]


@pytest.fixture
def make_headers(database: Database) -> TokenFactory:
    """Return a function creating a token for a role and returning its Authorization header."""

    def make(role: Role | str, name: str | None = None, device_id: str | None = None) -> dict[str, str]:
        role = Role(role)
        request = TokenCreate(name=name or f"test-{role.value}", role=role, device_id=device_id)
        with database.transaction() as session:
            _, plaintext = auth_service.create_token(session=session, request=request, actor="admin:test")
        return {"Authorization": f"Bearer {plaintext}"}

    return make


@pytest.fixture
def admin_headers(make_headers: TokenFactory) -> dict[str, str]:
    """Headers for an admin token."""
    return make_headers(Role.ADMIN)


@pytest.fixture
def operator_headers(make_headers: TokenFactory) -> dict[str, str]:
    """Headers for an operator token."""
    return make_headers(Role.OPERATOR)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright, one per session (its own browser download does not work offline)."""
    from playwright.sync_api import sync_playwright

    from control_plane.preflight import chromium_path

    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium must be installed under CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()

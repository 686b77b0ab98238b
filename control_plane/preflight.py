"""Checks that run before any slow work in `serve` and `demo`, each failing with one line that names the fix."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import shutil
import socket
import tempfile
from urllib.parse import urlsplit

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from control_plane.settings import Settings

CONNECT_TIMEOUT_S = 3.0


class PreflightFailure(Exception):
    """One failed check: what is wrong and how to fix it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}: {fix}")
        self.problem = problem
        self.fix = fix


def check_port_free(host: str, port: int) -> None:
    """Fail when ``host:port`` cannot be bound (as uvicorn will bind it, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightFailure(f"port {port} on {host} is in use",
                                       "pass --port or set EDGELOOP_PORT") from None
            raise PreflightFailure(f"cannot listen on {host}:{port} ({exc.strerror})",
                                   "pass --host/--port or set EDGELOOP_HOST/EDGELOOP_PORT") from None


def check_data_dir_writable(settings: Settings) -> None:
    """Fail when the data dir cannot be created or written."""
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".preflight-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PreflightFailure(f"data dir {data_dir} is not writable ({reason})",
                               "pass --data-dir or set EDGELOOP_DATA_DIR to a writable directory") from None


def check_database(settings: Settings) -> None:
    """Fail when the database is unreachable or was migrated by a newer Edgeloop than this one."""
    url = settings.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    connect_args = {"connect_timeout": int(CONNECT_TIMEOUT_S)} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            unknown = _unknown_revisions(connection)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:160]
        raise PreflightFailure(f"database {shown} is unreachable ({reason})",
                               "start it or set EDGELOOP_DATABASE_URL") from None
    finally:
        engine.dispose()
    if unknown:
        raise PreflightFailure(
            f"database {shown} is at migration {', '.join(sorted(unknown))}, which this Edgeloop does not know",
            "upgrade Edgeloop or point EDGELOOP_DATABASE_URL at another database")


def _unknown_revisions(connection: object) -> set[str]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from control_plane.db.migrate import alembic_config

    current = set(MigrationContext.configure(connection).get_current_heads())  # type: ignore[arg-type]
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}
    return current - known


def check_broker(settings: Settings, *, may_start_private: bool) -> None:
    """Fail when the configured broker does not answer, or no private broker could be started."""
    if settings.mqtt_url:
        parts = urlsplit(settings.mqtt_url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (8883 if parts.scheme in ("mqtts", "ssl") else 1883)
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise PreflightFailure(f"MQTT broker {host}:{port} is unreachable ({reason})",
                                   "start it or fix EDGELOOP_MQTT_URL") from None
        return
    if may_start_private and not shutil.which("mosquitto") and importlib.util.find_spec("amqtt") is None:
        raise PreflightFailure("no MQTT broker to start (neither the mosquitto binary nor amqtt is installed)",
                               "apt-get install mosquitto, or set EDGELOOP_MQTT_URL to a running broker")


def run_preflight(settings: Settings, *, serve_port: bool = True, private_broker: bool = False) -> None:
    """Run every check in the order a user would fix them; raise the first failure."""
    check_data_dir_writable(settings)
    if serve_port:
        check_port_free(settings.host, settings.port)
    check_database(settings)
    check_broker(settings, may_start_private=private_broker)


def chromium_path() -> str | None:
    """Return the Chromium binary the browser tests drive, if installed."""
    for name in ("chromium", "chromium-browser"):
        with contextlib.suppress(Exception):
            found = shutil.which(name)
            if found:
                return found
    return None

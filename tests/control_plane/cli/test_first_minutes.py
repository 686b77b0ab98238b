"""A newcomer's first minutes, through the real `edgeloop` process: settings precedence and one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.mqtt.broker import free_port

EDGELOOP = str(Path(sys.executable).parent / "edgeloop")
UNREACHABLE_PG = "postgresql+psycopg://edgeloop:secret@127.0.0.1:{port}/edgeloop"


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI with a clean EDGELOOP_* environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGELOOP_")}
    return subprocess.run([EDGELOOP, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed with exit 2 and exactly one stderr line; return that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert result.stdout.strip() == "", result.stdout
    return lines[0]


def test_demo_honours_edgeloop_data_dir_and_port(tmp_path: Path, busy_port: int) -> None:
    # The busy port stops the demo before any slow work, so what it names shows which settings it used.
    result = run_cli("demo", cwd=tmp_path, EDGELOOP_DATA_DIR="demo-data", EDGELOOP_PORT=str(busy_port))
    assert one_line(result) == (f"edgeloop: port {busy_port} on 127.0.0.1 is in use: "
                                "pass --port or set EDGELOOP_PORT")
    assert (tmp_path / "demo-data").is_dir()
    assert not (tmp_path / ".edgeloop").exists()


def test_an_option_beats_the_environment(tmp_path: Path, busy_port: int) -> None:
    # --port names a free port, so the check moves on past the busy EDGELOOP_PORT to the database.
    result = run_cli("demo", "--port", str(free_port()), "--data-dir", "from-option", cwd=tmp_path,
                     EDGELOOP_DATA_DIR="from-env", EDGELOOP_PORT=str(busy_port),
                     EDGELOOP_DATABASE_URL=UNREACHABLE_PG.format(port=free_port()))
    line = one_line(result)
    assert line.startswith("edgeloop: database postgresql+psycopg://edgeloop:***@127.0.0.1:")
    assert "is unreachable (" in line and line.endswith("): start it or set EDGELOOP_DATABASE_URL")
    assert "secret" not in line
    assert (tmp_path / "from-option").is_dir() and not (tmp_path / "from-env").exists()


def test_serve_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    result = run_cli("serve", "--port", str(busy_port), cwd=tmp_path, EDGELOOP_DATA_DIR="d")
    assert "is in use: pass --port or set EDGELOOP_PORT" in one_line(result)


def test_data_dir_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("serve", cwd=tmp_path, EDGELOOP_DATA_DIR=str(blocker / "data"))
    assert one_line(result) == (f"edgeloop: data dir {blocker / 'data'} is not writable (Not a directory): "
                                "pass --data-dir or set EDGELOOP_DATA_DIR to a writable directory")


def test_unreachable_broker(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli("serve", "--port", str(free_port()), cwd=tmp_path, EDGELOOP_DATA_DIR="d",
                     EDGELOOP_MQTT_URL=f"mqtt://127.0.0.1:{port}")
    assert one_line(result) == (f"edgeloop: MQTT broker 127.0.0.1:{port} is unreachable (Connection refused): "
                                "start it or fix EDGELOOP_MQTT_URL")


def test_database_from_a_newer_edgeloop(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "d").mkdir()
    with sqlite3.connect(tmp_path / "d" / "edgeloop.db") as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    result = run_cli("serve", "--port", str(free_port()), cwd=tmp_path, EDGELOOP_DATA_DIR="d")
    assert "is at migration 9999_from_the_future, which this Edgeloop does not know" in one_line(result)


def test_invalid_setting_names_its_variable(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, EDGELOOP_PORT="eighty")
    line = one_line(result)
    assert line.startswith("edgeloop: invalid setting port (")
    assert line.endswith("fix EDGELOOP_PORT or the matching option")


def test_debug_shows_the_traceback(tmp_path: Path, busy_port: int) -> None:
    result = run_cli("--debug", "serve", "--port", str(busy_port), cwd=tmp_path, EDGELOOP_DATA_DIR="d")
    assert result.returncode != 0
    assert "PreflightFailure" in result.stderr and len(result.stderr.splitlines()) > 3


@pytest.mark.slow
def test_third_party_warnings_go_to_the_log_file_not_the_console(tmp_path: Path) -> None:
    assert run_cli("db", "upgrade", cwd=tmp_path, EDGELOOP_DATA_DIR="d").returncode == 0
    result = run_cli("registry", "build-demo", cwd=tmp_path, EDGELOOP_DATA_DIR="d")
    assert result.returncode == 0, result.stderr
    assert "pre-processing" not in result.stderr + result.stdout
    assert result.stderr.strip() == ""
    # The warning was emitted, and kept where a curious user can still read it.
    assert "Please consider to run pre-processing before quantization" in (tmp_path / "d" / "edgeloop.log").read_text()

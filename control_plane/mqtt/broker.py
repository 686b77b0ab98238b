"""Private MQTT brokers for the demo, tests and benchmarks: a tuned mosquitto, or embedded amqtt without it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from control_plane.fleet.acl import CONTROL_PLANE_USER, mosquitto_acl
from control_plane.mqtt.auth_files import (
    ACL_FILE,
    PASSWORD_FILE,
    mosquitto_hash,
    new_password,
    password_file,
    reload_broker,
    write_atomic,
)

# Mosquitto's defaults silently drop messages (max_queued_messages 1000 lost 55% of 100k QoS 1 messages to a
# slow subscriber on these machines). These held with zero loss; max_packet_size keeps a runaway payload out.
TUNED_SETTINGS = """\
max_queued_messages 100000
max_inflight_messages 100
set_tcp_nodelay true
max_packet_size 524288
"""


class MosquittoNotInstalled(FileNotFoundError):
    """The mosquitto binary is not on this machine."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass(frozen=True)
class TlsListener:
    """A second, TLS listener: the broker's certificate and key, and the CA that signs client certificates."""

    certfile: Path
    keyfile: Path
    cafile: Path
    require_certificate: bool = False


class PrivateMosquitto:
    """A mosquitto process on a free port with a tuned config; stoppable and restartable (for outage tests).

    By default it requires a password and enforces the generated ACL: it starts knowing only the control
    plane's user (`control_plane_user`/`control_plane_password`); the control plane writes device users into
    the same files (`settings_overrides()`) and reloads it. `anonymous=True` is the explicit opt-out that
    tests and benchmarks not about authentication use.
    """

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, extra_config: str = "",
                 persistence: bool = True, anonymous: bool = False, tls: TlsListener | None = None) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            raise MosquittoNotInstalled("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        # Started as root, mosquitto drops to the mosquitto user: its directory must be reachable and writable
        # by that user, which a checkout under /root is not; hence a fresh directory under /tmp by default.
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edgeloop-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o777)
        self.port = port or free_port()
        self.anonymous = anonymous
        self.config_path = self.workdir / "mosquitto.conf"
        self.pid_file = self.workdir / "mosquitto.pid"
        self.control_plane_user = CONTROL_PLANE_USER
        self.control_plane_password = new_password()
        self.users: dict[str, str] = {} if anonymous else {self.control_plane_user: self.control_plane_password}
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {str(anonymous).lower()}", TUNED_SETTINGS,
                 f"log_dest file {self.workdir}/mosquitto.log"]
        if not anonymous:
            self._write_auth_files()
            lines += [f"password_file {self.workdir / PASSWORD_FILE}", f"acl_file {self.workdir / ACL_FILE}"]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
        lines.append(extra_config)
        self.tls_port: int | None = None
        if tls is not None:
            self.tls_port = free_port()
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {tls.cafile}", f"certfile {tls.certfile}",
                      f"keyfile {tls.keyfile}", f"require_certificate {str(tls.require_certificate).lower()}"]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def _write_auth_files(self) -> None:
        write_atomic(self.workdir / PASSWORD_FILE,
                     password_file((user, mosquitto_hash(pw)) for user, pw in sorted(self.users.items())))
        write_atomic(self.workdir / ACL_FILE, mosquitto_acl([u for u in self.users if u != self.control_plane_user],
                                                            self.control_plane_user))

    def add_user(self, user: str, password: str) -> None:
        """Add (or change) a broker user and reload the running broker.

        The control plane rewrites the same files from its device table: users added here survive only until then.
        """
        self.users[user] = password
        self._write_auth_files()
        if self.process is not None:
            reload_broker(self.pid_file)

    def authorise(self, client: Any, user: str) -> None:
        """Give a paho client a known user's credentials."""
        client.username_pw_set(user, self.users[user])

    @property
    def control_plane_url(self) -> str:
        """Return the URL the control plane connects with (its credentials included unless anonymous)."""
        if self.anonymous:
            return self.url
        credentials = f"{quote(self.control_plane_user, safe='')}:{quote(self.control_plane_password, safe='')}"
        return f"mqtt://{credentials}@127.0.0.1:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """Return FleetBridge keyword arguments for this broker."""
        return {"mqtt_url": self.control_plane_url}

    def settings_overrides(self) -> dict[str, Any]:
        """Return the control-plane Settings that authenticate to this broker and keep its password file current."""
        if self.anonymous:
            return {"mqtt_url": self.url}
        return {"mqtt_url": self.url, "mqtt_username": self.control_plane_user,
                "mqtt_password": self.control_plane_password, "mqtt_auth_dir": self.workdir,
                "mqtt_broker_pid_file": self.pid_file}

    @property
    def url(self) -> str:
        """Return mqtt://127.0.0.1:<port>."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> PrivateMosquitto:
        """Start the broker and wait until it accepts connections."""
        # Its own session: a terminal's Ctrl-C reaches only us, and we stop the broker last, after the fleet and
        # the control plane have disconnected (otherwise every client logs the broker's sudden death).
        self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        # mosquitto writes its own pid_file only when daemonised; this is what a reload signals.
        self.pid_file.write_text(f"{self.process.pid}\n")
        if not wait_for_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not start; see {self.workdir}/mosquitto.log")
        return self

    def stop(self) -> None:
        """Stop with SIGTERM, so retained messages and sessions are saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def close(self) -> None:
        """Stop and remove the work dir."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


class EmbeddedAmqtt:
    """The pure-Python amqtt broker in a background thread: MQTT 3.1.1 only, no shared subscriptions; demo only."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker: Any = None

    @property
    def url(self) -> str:
        """Return mqtt://127.0.0.1:<port>."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedAmqtt:
        """Start amqtt on its own event loop thread."""
        from amqtt.broker import Broker

        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        self._thread.start()

        async def boot() -> None:
            self._broker = Broker(config)
            await self._broker.start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout)
        if not wait_for_port(self.port, timeout):
            raise RuntimeError("amqtt did not start")
        return self

    def stop(self) -> None:
        """Shut the broker down and stop its thread."""
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
            self._broker = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def start_private_broker() -> tuple[PrivateMosquitto | EmbeddedAmqtt, str]:
    """Start a private mosquitto (password file + ACL) if the binary exists, else embedded amqtt (anonymous, no
    ACL: see docs/security.md); return it and its MQTT protocol."""
    try:
        return PrivateMosquitto().start(), "5"
    except MosquittoNotInstalled:
        return EmbeddedAmqtt().start(), "3.1.1"

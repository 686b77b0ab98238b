"""Mosquitto password and ACL files: PBKDF2-SHA512 hashes in mosquitto's `$7$` format, atomic writes, SIGHUP reload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)
PASSWORD_FILE = "passwords"
ACL_FILE = "edgeloop.acl"
# mosquitto_passwd 2.0 writes `$7$101$<12-byte salt>$<64-byte PBKDF2-HMAC-SHA512>`; it reads any iteration count.
HASH_ITERATIONS = 101
_SALT_BYTES = 12


def new_password() -> str:
    """Return a fresh random broker password (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None) -> str:
    """Return the password hashed as mosquitto_passwd does: `$7$<iterations>$<b64 salt>$<b64 hash>`."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_hash(password: str, hashed: str) -> bool:
    """Return whether a password matches a `$7$` hash."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), 64)
    except ValueError:
        return False
    return hmac.compare_digest(expected, base64.b64decode(digest))


def password_file(entries: Iterable[tuple[str, str]]) -> str:
    """Render `user:hash` lines; a user name may not contain ':' or a line break (mosquitto's own rule)."""
    lines = []
    for user, hashed in entries:
        if not user or any(c in user for c in ":\n\r\x00"):
            raise ValueError(f"user name {user!r} cannot appear in a mosquitto password file")
        lines.append(f"{user}:{hashed}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace a file in one rename, so the broker never reads a half-written one.

    Mode 0644: mosquitto started as root reads the files after dropping to its own user. The files hold
    only salted PBKDF2 hashes; keep the directory itself closed to other users in production.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def reload_broker(pid_file: Path | None) -> bool:
    """Send SIGHUP to the broker named in its pid file (mosquitto re-reads password and ACL files)."""
    if pid_file is None:
        return False
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        log.warning("could not reload the broker from %s: %s", pid_file, exc)
        return False
    return True

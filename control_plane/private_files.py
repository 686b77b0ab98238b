"""Owner-only files and directories: the database, keys, tokens and checkpoint logs are nobody else's to read."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700; an existing directory is tightened too."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def restrict_file(path: Path) -> None:
    """Make an existing file 0600 (files created before permissions were enforced, or by other tools)."""
    _tighten(path, PRIVATE_FILE_MODE)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; tighten it if it does."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    restrict_file(path)


def prepare_sqlite_file(path: Path) -> None:
    """Create the SQLite database file 0600 before SQLite does (it gives its -wal/-shm files the same mode)."""
    if not path.parent.exists():
        ensure_private_dir(path.parent)
    create_private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            restrict_file(companion)


def append_private_line(path: Path, line: str) -> None:
    """Append one line to an owner-only, append-only file and sync it to disk."""
    if not path.parent.exists():
        ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        # A line torn by a crash has no newline: start on a fresh line so the new one stays readable.
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        # One write() of a short line with O_APPEND: concurrent writers (replicas sharing a dir) never interleave.
        os.write(fd, (("\n" if torn else "") + line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    restrict_file(path)


def _tighten(path: Path, mode: int) -> None:
    # Only ever removes bits, and only on what we own: a shared directory we merely use is not ours to change.
    with contextlib.suppress(FileNotFoundError, PermissionError):
        stat = path.stat()
        if stat.st_uid == os.getuid() and stat.st_mode & 0o777 & ~mode:
            os.chmod(path, stat.st_mode & 0o777 & mode)

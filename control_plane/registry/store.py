"""Content-addressed artifact files under ``<data_dir>/artifacts/sha256/<hash>``."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from control_plane.errors import Invalid, NotFound, PayloadTooLarge

CHUNK = 1024 * 1024


class ArtifactStore:
    """Writes blobs atomically (temp file, fsync, rename) so a reader never sees half a file."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Return where the blob with this hash lives."""
        return self._blobs / sha256

    def open_existing(self, sha256: str) -> Path:
        """Return the path of a stored blob or raise NotFound."""
        path = self.path_for(sha256)
        if not path.is_file():
            raise NotFound(f"artifact blob {sha256} not found")
        return path

    async def put_stream(
        self, chunks: AsyncIterator[bytes], *, expected_sha256: str | None = None
    ) -> tuple[str, int, bool]:
        """Store a streamed upload; return (sha256, size, created)."""
        writer = _BlobWriter(self)
        try:
            async for chunk in chunks:
                writer.write(chunk)
            return writer.commit(expected_sha256)
        finally:
            writer.discard()

    def put_chunks(self, chunks: Iterable[bytes], *, expected_sha256: str | None = None) -> tuple[str, int, bool]:
        """Store bytes from a synchronous source; return (sha256, size, created)."""
        writer = _BlobWriter(self)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit(expected_sha256)
        finally:
            writer.discard()

    def put_bytes(self, data: bytes) -> tuple[str, int, bool]:
        """Store an in-memory blob."""
        return self.put_chunks([data])


class _BlobWriter:
    """Hashes and counts while writing to a temp file; nothing lands unless commit() succeeds."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store._tmp, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._store.max_bytes:
            raise PayloadTooLarge(f"artifact exceeds the {self._store.max_bytes}-byte limit",
                                  limit=self._store.max_bytes)
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self, expected_sha256: str | None) -> tuple[str, int, bool]:
        digest = self._hash.hexdigest()
        if expected_sha256 is not None and expected_sha256 != digest:
            raise Invalid("sha256 mismatch: the uploaded bytes do not match the declared hash",
                          declared=expected_sha256, actual=digest)
        if self.size == 0:
            raise Invalid("empty artifact")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target = self._store.path_for(digest)
        created = not target.exists()
        if created:
            os.replace(self._path, target)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return digest, self.size, created

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)

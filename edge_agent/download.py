"""Resumable, size-capped, sha256-checked artifact download over HTTP (stdlib urllib)."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)?/?(\d+|\*)?")


class DownloadError(Exception):
    """The artifact could not be fetched or failed verification; reason is a protocol reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _Retry(Exception):
    """A transient failure: back off and resume with a Range request."""


class _Sink:
    """Where downloaded bytes go: a partial file, or only the hasher (shared-cache mode)."""

    def __init__(self, dest: Path | None) -> None:
        self.dest = dest
        self.hasher = hashlib.sha256()
        self.size = 0
        self._handle: BinaryIO | None = None
        if dest is not None and dest.exists():
            with open(dest, "rb") as handle:
                while block := handle.read(CHUNK):
                    self.hasher.update(block)
                    self.size += len(block)

    def write(self, block: bytes) -> None:
        if self.dest is not None:
            if self._handle is None:
                self._handle = open(self.dest, "ab")  # noqa: SIM115 - kept open across chunks
            self._handle.write(block)
            # Hand each chunk to the OS so a killed process resumes from here (fsync only at the end).
            self._handle.flush()
        self.hasher.update(block)
        self.size += len(block)

    def reset(self) -> None:
        self.close()
        if self.dest is not None:
            self.dest.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.size = 0

    def close(self, sync: bool = False) -> None:
        if self._handle is not None:
            self._handle.flush()
            if sync:
                os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


def _same_origin(a: str, b: str) -> bool:
    from edge_agent.manifest import url_origin  # manifest imports nothing from here; keep it one-way

    try:
        return url_origin(a) == url_origin(b)
    except ValueError:
        return False


class _SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects but never forward the device token to another origin (e.g. a presigned store URL)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not _same_origin(newurl, req.full_url):
            new.remove_header("Authorization")
        return new


class _Clock:
    """The overall deadline and the pre-emption check shared by every request of one download."""

    def __init__(self, deadline_s: float | None, cancelled: Callable[[], bool] | None) -> None:
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.deadline_s = deadline_s
        self.cancelled = cancelled

    def check(self, size: int) -> None:
        """Raise DownloadError if a newer manifest pre-empted us or the deadline passed."""
        if self.cancelled is not None and self.cancelled():
            raise DownloadError("superseded", f"a newer manifest arrived after {size} bytes")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DownloadError("download_too_slow", f"{size} bytes in {self.deadline_s:.0f}s")

    def timeout(self, per_read_s: float) -> float:
        """Return the socket timeout: the per-read timeout, never past the deadline."""
        if self.deadline is None:
            return per_read_s
        return max(0.05, min(per_read_s, self.deadline - time.monotonic()))

    def sleep(self, delay: float, size: int) -> None:
        """Back off, waking early to honour pre-emption and the deadline."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            self.check(size)
            time.sleep(min(left, 0.1))
        self.check(size)


_OPENER = urllib.request.build_opener(_SameHostAuthRedirect())


def _fetch_once(url: str, token: str, sink: _Sink, limit: int, timeout_s: float, clock: _Clock) -> None:
    """Issue one GET (ranged if resuming) and stream the body into sink."""
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    if sink.size:
        headers["Range"] = f"bytes={sink.size}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _OPENER.open(request, timeout=clock.timeout(timeout_s))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and sink.size:
            return  # We already hold every byte; the hash check decides.
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code}") from exc
        raise DownloadError("download_failed", f"HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(str(exc)) from exc
    with response:
        if response.status == 200 and sink.size:
            sink.reset()  # The server ignored Range: start over rather than append a second copy.
        elif response.status == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != sink.size:
                sink.reset()
                raise _Retry("Content-Range does not continue the partial file")
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and sink.size + int(length) > limit:
            sink.reset()
            raise DownloadError("size_exceeded", f"server announces {sink.size + int(length)} > {limit}")
        expected = int(length) if length is not None and length.isdigit() else None
        received = 0
        try:
            while block := response.read1(CHUNK):
                clock.check(sink.size)
                if sink.size + len(block) > limit:
                    sink.reset()
                    raise DownloadError("size_exceeded", f"more than {limit} bytes")
                sink.write(block)
                received += len(block)
        except (OSError, http.client.HTTPException) as exc:
            sink.close(sync=True)
            raise _Retry(f"interrupted after {sink.size} bytes: {exc}") from exc
        if expected is not None and received < expected:
            # read(amt) returns b"" on a dropped connection instead of raising IncompleteRead.
            sink.close(sync=True)
            raise _Retry(f"connection closed after {received} of {expected} bytes")


def download_artifact(
    *,
    url: str,
    token: str,
    dest: Path | None,
    sha256: str,
    declared_size: int,
    max_bytes: int,
    attempts: int = 6,
    backoff_s: float = 0.2,
    timeout_s: float = 10.0,
    on_retry: Callable[[int, str], None] | None = None,
    deadline_s: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> int:
    """Download url into dest (resuming a partial file), enforce the size bound and check sha256.

    dest=None streams through the hasher only (the caller shares an already stored copy).
    Returns the byte count; raises DownloadError with reason size_exceeded, sha256_mismatch or
    download_failed. Transient failures back off exponentially; attempts bounds the failures
    in a row without progress. deadline_s bounds the whole download (reason download_too_slow) and
    cancelled() is polled between chunks and during back-off (reason superseded); a timed-out or
    pre-empted download keeps its partial file for a later attempt.
    """
    clock = _Clock(deadline_s, cancelled)
    limit = min(declared_size, max_bytes)
    sink = _Sink(dest)
    if sink.size > limit:
        sink.reset()
    resumed_from = sink.size
    failures = 0
    while True:
        before = sink.size
        try:
            clock.check(sink.size)
            _fetch_once(url, token, sink, limit, timeout_s, clock)
        except _Retry as exc:
            failures = 0 if sink.size > before else failures + 1
            if failures >= attempts:
                sink.close()
                raise DownloadError("download_failed", f"gave up after {attempts} attempts: {exc}") from exc
            delay = min(backoff_s * (2 ** max(failures - 1, 0)), 5.0)
            log.info("download of %s interrupted (%s); resuming at byte %d in %.2fs",
                     url, exc, sink.size, delay)
            if on_retry is not None:
                on_retry(sink.size, str(exc))
            try:
                clock.sleep(delay, sink.size)
            except DownloadError:
                sink.close(sync=True)
                raise
            continue
        except DownloadError:
            sink.close(sync=True)
            raise
        sink.close(sync=True)
        if sink.hasher.hexdigest() == sha256:
            return sink.size
        if resumed_from:
            # The partial file from an earlier run may itself be damaged: retry once from zero.
            log.warning("sha256 mismatch after resuming at %d; restarting from scratch", resumed_from)
            sink.reset()
            resumed_from = 0
            continue
        got = sink.size
        sink.reset()
        raise DownloadError("sha256_mismatch", f"got {got} bytes with a different digest")

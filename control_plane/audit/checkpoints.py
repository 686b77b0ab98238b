"""Sign only a verified head, and copy every checkpoint to an append-only file and an external sink."""

from __future__ import annotations

import base64
import json
import logging
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.audit import service
from control_plane.audit.chain import canonical_json, checkpoint_message
from control_plane.audit.models import GENESIS_HASH, AuditCheckpoint, AuditEntry
from control_plane.audit.verify import CheckpointRecord, read_head, signature_valid, walk_chain
from control_plane.db.session import Database
from control_plane.errors import Conflict, Invalid
from control_plane.private_files import append_private_line
from control_plane.settings import Settings
from control_plane.signing import Signer

log = logging.getLogger(__name__)

CHECKPOINT_FILE_NAME = "audit-checkpoints.jsonl"
SINK_TIMEOUT_S = 15.0
MAX_PENDING_PUSHES = 10_000
_ANCHOR_CANDIDATES = 50  # newest database checkpoints tried for a valid signature before falling back


class AuditChainBroken(Conflict):
    """The chain since the last trusted checkpoint does not verify: the head is not signed."""


def checkpoint_line(checkpoint: AuditCheckpoint) -> str:
    """Return a checkpoint as one canonical JSON line (what the file and the sinks receive)."""
    return canonical_json({"seq": checkpoint.seq, "head_hash": checkpoint.head_hash, "key_id": checkpoint.key_id,
                           "signature": checkpoint.signature, "created_at": checkpoint.created_at})


def load_checkpoint_file(path: Path, *, strict: bool = True) -> list[CheckpointRecord]:
    """Read a checkpoint JSON-lines file; a line that is not a checkpoint is an error naming the line.

    A last line without its newline is a write torn by a crash and is skipped; ``strict=False`` (the checkpointer's
    anchor, where a damaged file must not stop signing) skips every unreadable line with a warning.
    """
    records = []
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise Invalid(f"cannot read checkpoint file {path}: {exc.strerror}") from exc
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(_parse_line(line, f"{path}:{number}"))
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):  # no newline after it: torn by a crash mid-append
                log.warning("%s:%d: skipping a torn last line", path, number)
            elif strict:
                raise Invalid(f"{path}:{number}: not a checkpoint line") from exc
            else:
                log.warning("%s:%d: not a checkpoint line; skipped", path, number)
    return records


def _parse_line(line: str, source: str) -> CheckpointRecord:
    item = json.loads(line)
    seq, head_hash, key_id, signature = item["seq"], item["head_hash"], item["key_id"], item["signature"]
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 and isinstance(head_hash, str)
            and isinstance(key_id, str) and isinstance(signature, str)):
        raise TypeError(source)
    return CheckpointRecord(seq=seq, head_hash=head_hash, key_id=key_id, signature=signature, source=source)


@dataclass
class CheckpointSink:
    """Where checkpoints go besides the database: an append-only file, an HTTP endpoint, a command."""

    file: Path | None = None
    url: str | None = None
    token: str | None = None
    command: str | None = None
    _pending: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointSink:
        """Build the sink the settings describe (the file defaults to the data dir)."""
        return cls(file=settings.audit_checkpoint_file or settings.data_dir / CHECKPOINT_FILE_NAME,
                   url=settings.audit_checkpoint_sink_url, token=settings.audit_checkpoint_sink_token,
                   command=settings.audit_checkpoint_sink_command)

    def external_records(self) -> list[CheckpointRecord]:
        """Return the checkpoints already in the file (none when there is no file yet)."""
        if self.file is None or not self.file.exists():
            return []
        return load_checkpoint_file(self.file, strict=False)

    def publish(self, checkpoint: AuditCheckpoint) -> None:
        """Append to the file (raising on failure), then push to the remote sinks (retried on the next publish)."""
        line = checkpoint_line(checkpoint)
        if self.file is not None:
            append_private_line(self.file, line)
        if self.url or self.command:
            self._pending.append((checkpoint.seq, line))
            del self._pending[:-MAX_PENDING_PUSHES]
            self.flush()

    def flush(self) -> None:
        """Push queued checkpoints in order; stop at the first failure and keep the rest for later."""
        while self._pending:
            seq, line = self._pending[0]
            try:
                self._push(seq, line)
            except Exception as exc:  # a sink outage must not stop signing; it is logged and retried
                log.warning("audit checkpoint %d not pushed to the external sink (will retry): %s", seq, exc)
                return
            self._pending.pop(0)

    def _push(self, seq: int, line: str) -> None:
        if self.url:
            headers = {"Content-Type": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            httpx.post(self.url, content=line.encode(), headers=headers, timeout=SINK_TIMEOUT_S).raise_for_status()
        if self.command:
            # No shell: "{seq}" in an argument becomes the sequence number (one object per checkpoint in a bucket).
            argv = [arg.replace("{seq}", str(seq)) for arg in shlex.split(self.command)]
            done = subprocess.run(argv, input=line.encode() + b"\n", capture_output=True, timeout=SINK_TIMEOUT_S,
                                  check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-200:]}")


def trusted_anchor(session: Session, public_key: bytes, external: Sequence[CheckpointRecord] = ()) -> tuple[int, str]:
    """Return the newest checkpoint with a valid signature, from the database or the file; genesis if none."""
    newest = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(_ANCHOR_CANDIDATES))
    candidates = [CheckpointRecord(seq=c.seq, head_hash=c.head_hash, key_id=c.key_id, signature=c.signature)
                  for c in newest]
    candidates += sorted(external, key=lambda r: r.seq, reverse=True)
    for record in sorted(candidates, key=lambda r: r.seq, reverse=True):
        if signature_valid(record, public_key):
            return record.seq, record.head_hash
    return 0, GENESIS_HASH


def verify_since(session: Session, anchor: tuple[int, str], *, to_head: bool) -> tuple[int, str]:
    """Verify every entry after the anchor (whose hash must be unchanged); return the last verified (seq, hash)."""
    anchor_seq, anchor_hash = anchor
    if anchor_seq > 0:
        stored = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == anchor_seq))
        if stored is None:
            raise AuditChainBroken(f"audit entry {anchor_seq}, last verified, is gone (log truncated); not signing")
        if stored != anchor_hash:
            raise AuditChainBroken(f"audit entries up to {anchor_seq} were rewritten since they were verified; "
                                   "not signing")
    walk = walk_chain(session, after_seq=anchor_seq, after_hash=anchor_hash)
    if walk.broken_seq is not None:
        raise AuditChainBroken(f"audit entry {walk.broken_seq}: {walk.reason}; not signing")
    if to_head and read_head(session) != (walk.last_seq, walk.last_hash):
        raise AuditChainBroken(f"the audit head does not match the chain's end at {walk.last_seq}; not signing")
    return walk.last_seq, walk.last_hash


class Checkpointer:
    """Sign the audit head only after verifying every entry since the last trusted checkpoint."""

    def __init__(self, database: Database, signer: Signer, sink: CheckpointSink | None = None) -> None:
        self.database = database
        self.signer = signer
        self.sink = sink or CheckpointSink()
        # The last (seq, hash) this process verified: entries before it may never change again, whatever the
        # database's checkpoint table says later (an attacker can delete checkpoints, not this memory).
        self.verified: tuple[int, str] | None = None

    def _anchor(self, session: Session) -> tuple[int, str]:
        if self.verified is None:
            self.verified = trusted_anchor(session, self.signer.public_raw, self.sink.external_records())
        return self.verified

    def step(self) -> AuditCheckpoint | None:
        """Verify the new suffix, sign the head and publish the checkpoint; None when there is nothing new."""
        # The long part of the walk runs in a read transaction, so appenders are not blocked behind it.
        with self.database.transaction(write=False) as session:
            self.verified = verify_since(session, self._anchor(session), to_head=False)
        with self.database.transaction() as session:
            checkpoint = sign_verified_head(session, self.signer, self.verified)
            self.verified = (checkpoint.seq, checkpoint.head_hash) if checkpoint else self.verified
        if checkpoint is not None:
            self.sink.publish(checkpoint)
        else:
            self.sink.flush()
        return checkpoint


def sign_verified_head(session: Session, signer: Signer, anchor: tuple[int, str]) -> AuditCheckpoint | None:
    """Lock the head, verify the entries after ``anchor`` up to it, and sign it; None if empty or signed already."""
    head_seq, _ = service.lock_head(session)
    if head_seq == 0:
        return None
    verify_since(session, anchor, to_head=True)
    if session.get(AuditCheckpoint, head_seq) is not None:
        return None
    _, head_hash = read_head(session)
    signature = base64.b64encode(signer.sign(checkpoint_message(head_seq, head_hash))).decode()
    checkpoint = AuditCheckpoint(seq=head_seq, head_hash=head_hash, key_id=signer.key_id, signature=signature)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def checkpoint_once(database: Database, signer: Signer, sink: CheckpointSink) -> AuditCheckpoint | None:
    """Verify since the newest trusted checkpoint, sign the head, publish it (the API's and CLI's checkpoint)."""
    return Checkpointer(database, signer, sink).step()


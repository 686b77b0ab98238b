"""What an attacker with write access to the database does to the audit tables, as reusable steps."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from control_plane.audit import service as audit
from control_plane.audit.chain import canonical_json, entry_hash
from control_plane.audit.checkpoints import CheckpointSink, checkpoint_once, load_checkpoint_file
from control_plane.audit.models import GENESIS_HASH
from control_plane.audit.schemas import VerifyReport
from control_plane.db.session import Database
from control_plane.signing import Signer


def append(database: Database, count: int, action: str = "test.append") -> None:
    """Append ``count`` entries through the service, one transaction each."""
    for i in range(count):
        with database.transaction() as session:
            audit.record(session, actor="operator:t", action=action, resource=("thing", str(i)), data={"i": i})


def checkpoint(database: Database, signer: Signer, sink: CheckpointSink) -> int:
    """Sign the head the way the API and CLI do; return its seq."""
    made = checkpoint_once(database, signer, sink)
    assert made is not None
    return made.seq


def verify(database: Database, signer: Signer, against: Path | None = None) -> VerifyReport:
    """Verify from the database alone, or against a checkpoint file."""
    external = load_checkpoint_file(against) if against is not None else []
    with database.transaction(write=False) as session:
        return audit.verify(session=session, public_key=signer.public_raw, external=external)


def execute(database: Database, sql: str, **params: object) -> None:
    """Run one statement as the attacker (straight at the tables)."""
    with database.transaction() as session:
        session.execute(text(sql), params)


def entry_hash_at(database: Database, seq: int) -> str:
    """Return the stored hash of one entry."""
    with database.transaction(write=False) as session:
        return str(session.execute(text("SELECT hash FROM audit_entries WHERE seq = :s"), {"s": seq}).scalar_one())


def rewrite_recomputing(database: Database, seq: int) -> None:
    """Change entry ``seq``'s data and recompute every hash from it to the head, moving the head too."""
    with database.transaction() as session:
        rows = session.execute(text("SELECT seq, body FROM audit_entries WHERE seq >= :s ORDER BY seq"),
                               {"s": seq}).all()
        prev = GENESIS_HASH if seq == 1 else session.execute(
            text("SELECT hash FROM audit_entries WHERE seq = :s"), {"s": seq - 1}).scalar_one()
        for row_seq, body in rows:
            parsed = json.loads(body)
            if row_seq == seq:
                parsed["data"] = {"i": "nothing to see"}
            new_body = canonical_json(parsed)
            digest = entry_hash(prev, new_body)
            session.execute(text("UPDATE audit_entries SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s"),
                            {"b": new_body, "p": prev, "h": digest, "s": row_seq})
            prev = digest
        session.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})


def truncate_and_move_head(database: Database, keep: int) -> None:
    """Delete the entries after ``keep`` and point the head at ``keep``, so the chain looks whole."""
    execute(database, "DELETE FROM audit_entries WHERE seq > :k", k=keep)
    execute(database, "UPDATE audit_head SET seq = :k, hash = :h", k=keep, h=entry_hash_at(database, keep))

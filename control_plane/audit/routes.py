"""Audit log routes: list, verify, export, checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse

from control_plane.audit import service
from control_plane.audit.checkpoints import CheckpointSink, checkpoint_once, load_checkpoint_file
from control_plane.audit.schemas import AuditEntryRead, CheckpointRead, PublicKeyRead, VerifyReport
from control_plane.constraints import ParamNonNegativeInt64
from control_plane.deps import Admin, DatabaseDep, Reader, SessionDep
from control_plane.errors import Conflict
from control_plane.signing import Signer

router = APIRouter(prefix="/audit", tags=["audit"])


def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.audit_signer
    return signer


@router.get("/entries", response_model=list[AuditEntryRead])
def list_entries(
    session: SessionDep,
    _: Reader,
    after_seq: ParamNonNegativeInt64 = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=100)] = None,
    resource_type: Annotated[str | None, Query(max_length=50)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[AuditEntryRead]:
    """List entries in chain order, after a sequence number."""
    entries = service.list_entries(
        session=session, after_seq=after_seq, limit=limit, action=action,
        resource_type=resource_type, resource_id=resource_id, actor=actor,
    )
    return [service.to_read(e) for e in entries]


@router.get("/verify", response_model=VerifyReport)
def verify(
    request: Request, session: SessionDep, _: Reader,
    against_checkpoint_file: Annotated[bool, Query(description=(
        "Also check against this replica's append-only checkpoint file (catches deleted checkpoints)."))] = False,
) -> VerifyReport:
    """Recompute the chain and name the first broken entry, if any."""
    external = []
    if against_checkpoint_file:
        sink = CheckpointSink.from_settings(request.app.state.settings)
        if sink.file is not None and sink.file.exists():
            external = load_checkpoint_file(sink.file)
    return service.verify(session=session, public_key=_signer(request).public_raw, external=external)


@router.get("/export", response_class=StreamingResponse)
def export(database: DatabaseDep, _: Reader) -> StreamingResponse:
    """Stream the whole log as JSON Lines."""

    def lines() -> Iterator[str]:
        # Its own session: the request's session is closed before the body streams.
        with database.transaction(write=False) as session:
            yield from service.export_lines(session=session)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/checkpoints", response_model=list[CheckpointRead])
def list_checkpoints(session: SessionDep, _: Reader) -> list[CheckpointRead]:
    """List signed checkpoints, newest first."""
    return [CheckpointRead.model_validate(c, from_attributes=True) for c in service.list_checkpoints(session=session)]


@router.post("/checkpoints", status_code=status.HTTP_201_CREATED, response_model=CheckpointRead)
def create_checkpoint(request: Request, database: DatabaseDep, _: Admin) -> CheckpointRead:
    """Verify the entries since the last trusted checkpoint, sign the head now and publish the checkpoint."""
    # Its own transactions: the checkpoint reaches the append-only file only after it is committed.
    sink = CheckpointSink.from_settings(request.app.state.settings)
    checkpoint = checkpoint_once(database, _signer(request), sink)
    if checkpoint is None:
        raise Conflict("the current head is already checkpointed (or the log is empty)")
    return CheckpointRead.model_validate(checkpoint, from_attributes=True)


@router.get("/public-key", response_model=PublicKeyRead)
def public_key(request: Request, _: Reader) -> PublicKeyRead:
    """Return the checkpoint-signing public key."""
    signer = _signer(request)
    return PublicKeyRead(key_id=signer.key_id, public_key_b64=signer.public_b64)

"""Request dependencies as Annotated aliases: settings, database session, caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.orm import Session

from control_plane.auth import service as auth_service
from control_plane.auth.roles import Scope
from control_plane.auth.schemas import Principal
from control_plane.db.session import Database
from control_plane.errors import Forbidden, Unauthenticated
from control_plane.limits import authenticated_before_body
from control_plane.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    """Return this app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """Return this app's database."""
    database: Database = request.app.state.database
    return database


def _finish(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """Yield one session per request; commit on success, roll back on error.

    Async on purpose: creating a session does no I/O, and each worker-thread hop costs more than the request's own
    SQL under load. Reads end inline (a rollback of nothing). A SQLite write commits inline too: in WAL mode with
    synchronous=NORMAL its COMMIT appends to the WAL in the OS page cache and never waits for a lock (the writer
    already holds it). A PostgreSQL commit waits for the server's WAL flush, so it takes one threadpool hop.
    """
    write = request.method not in READ_METHODS
    database = get_database(request)
    async with database.request_slots.slot():  # a free pooled connection for this request (db.session.RequestSlots)
        session = database.session(write=write)
        try:
            yield session
        except BaseException:
            await run_in_threadpool(_finish, session, commit=False)
            raise
        if write and not database.is_sqlite:
            await run_in_threadpool(_finish, session, commit=True)
        else:
            _finish(session, commit=write)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
# scope="function" commits before the response is sent, so a failed commit is never reported as success.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False)


class Authorize:
    """Dependency that authenticates the caller and requires any one of ``scopes`` (none: any valid token)."""

    def __init__(self, *scopes: Scope) -> None:
        self.scopes = frozenset(scopes)

    # Async, with the indexed token lookup inline: one small query costs less than a worker-thread hop. It must
    # never wait for a lock on the event loop, so it never runs on a SQLite writer's session: that session's first
    # statement (BEGIN IMMEDIATE) waits for the database write lock, which another request holds until its commit,
    # and that commit needs this very loop to be scheduled. Such requests authenticate on a pooled read connection.
    async def __call__(
        self,
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthenticated("missing bearer token")
        database = get_database(request)
        # A request with a body had its token checked by RequestGuard before the body was read: one lookup, not two.
        principal = authenticated_before_body(request.scope, credentials.credentials)
        if principal is None and database.is_sqlite and request.method not in READ_METHODS:
            with database.engine.connect() as connection:
                principal = auth_service.authenticate(connection=connection, bearer=credentials.credentials)
        elif principal is None:
            principal = auth_service.authenticate(connection=session.connection(), bearer=credentials.credentials)
        if self.scopes and not self.scopes & principal.scopes:
            wanted = sorted(s.value for s in self.scopes)
            raise Forbidden(f"role {principal.role.value!r} lacks scope {' or '.join(wanted)}",
                            required_scopes=wanted)
        return principal


Authenticated = Annotated[Principal, Depends(Authorize())]
Reader = Annotated[Principal, Depends(Authorize(Scope.READ))]
Writer = Annotated[Principal, Depends(Authorize(Scope.WRITE))]
Proposer = Annotated[Principal, Depends(Authorize(Scope.PROPOSE))]
Approver = Annotated[Principal, Depends(Authorize(Scope.APPROVE))]
Admin = Annotated[Principal, Depends(Authorize(Scope.ADMIN))]
Device = Annotated[Principal, Depends(Authorize(Scope.DEVICE))]
ReaderOrDevice = Annotated[Principal, Depends(Authorize(Scope.READ, Scope.DEVICE))]


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    """Serialise a response schema once, in pydantic-core, as FastAPI would (by alias).

    Returning a Response skips FastAPI's second validation of the returned model against ``response_model``
    (which stays declared, for the schema), and for a sync route the worker-thread hop that validation takes.
    """
    return Response(body.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")


def require_device(principal: Principal, device_id: str) -> None:
    """Refuse a device token acting for another device."""
    if principal.device_id != device_id:
        raise Forbidden("device token is scoped to another device")

"""Sync ``prompts/*.md`` into the registry: new content → new version, unchanged → no-op, idempotent."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from control_plane.auth.roles import ROLE_SCOPES, Role
from control_plane.auth.schemas import Principal
from control_plane.db.session import Database
from control_plane.errors import EdgeloopError, NotFound
from control_plane.prompts import labels, service
from control_plane.prompts.files import PromptFileError, parse_prompt_file, prompt_files
from control_plane.prompts.schemas import LabelSet, PromptCreate, SyncReport
from control_plane.settings import Settings

log = logging.getLogger(__name__)
SYNC_PRINCIPAL = Principal(token_id="system", name="prompt-sync", role=Role.ADMIN, scopes=ROLE_SCOPES[Role.ADMIN])
# Any constant works; it only has to be the same for every replica.
SYNC_LOCK_KEY = 7_341_990_104
INITIAL_LABEL = "production"


def prompts_dir(settings: Settings) -> Path | None:
    """Return the prompts directory: the prompts_dir setting, else ``prompts/`` beside the data dir, if it exists."""
    configured = settings.prompts_dir
    if configured is not None:
        return Path(configured) if configured.strip() else None
    candidate = settings.data_dir.resolve().parent / "prompts"
    return candidate if candidate.is_dir() else None


def _sync_file(session: Session, path: Path, source: str, report: SyncReport, actor: str) -> None:
    parsed = parse_prompt_file(path)
    try:
        prompt = service.get_prompt(session=session, name=parsed.name)
        created = False
    except NotFound:
        prompt = service.create_prompt(session=session, actor=actor, request=PromptCreate(
            name=parsed.name, kind=parsed.kind, description=parsed.description, gate=parsed.gate))
        created = True
    if prompt.kind != parsed.kind:
        raise PromptFileError(f"prompt {parsed.name!r} is a {prompt.kind} prompt; the file says {parsed.kind}")
    gate = parsed.gate.model_dump(exclude_none=True) if parsed.gate else {}
    if not created:
        gate = _keep_pinned_dataset(parsed.name, prompt.gate, gate)
        if gate != prompt.gate:
            service.update_gate(session=session, name=parsed.name, gate=gate, actor=actor)
    version, is_new = service.create_version(session=session, name=parsed.name, request=parsed.version, actor=actor,
                                             source=source, allow_unchanged=True)
    if created:
        report.created.append(parsed.name)
    elif is_new:
        report.new_versions.append(f"{parsed.name}@{version.version}")
    else:
        report.unchanged.append(parsed.name)
    if created:
        labels.set_label(session=session, name=parsed.name, label=INITIAL_LABEL,
                         request=LabelSet(version=version.version), principal=SYNC_PRINCIPAL,
                         bootstrap_reason="first sync of the prompt file")


def _keep_pinned_dataset(name: str, stored: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """Return the file's gate with the stored dataset pin; a file may not move the pin (that is an approver's)."""
    pinned, requested = stored.get("dataset"), wanted.get("dataset")
    same = requested is None or requested == pinned or (
        "@" not in str(requested) and pinned is not None and str(pinned).partition("@")[0] == requested)
    if not same:
        raise PromptFileError(f"prompt {name!r}: the file changes the gate's eval dataset from {pinned!r} to "
                              f"{requested!r}; only an approver may (PUT /prompts/{name}/gate)")
    kept = {k: v for k, v in wanted.items() if k not in ("dataset", "dataset_version_id")}
    if pinned is not None:
        kept.update(dataset=pinned, dataset_version_id=stored.get("dataset_version_id"))
    return kept


def sync_directory(*, session: Session, directory: Path, actor: str = SYNC_PRINCIPAL.actor) -> SyncReport:
    """Sync every prompt file; a bad file is reported and skipped, the others still sync."""
    if session.get_bind().dialect.name == "postgresql":
        # Two replicas starting together take turns; the second then finds every version already there.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SYNC_LOCK_KEY})
    report = SyncReport()
    for path in prompt_files(directory):
        source = f"prompts/{path.name}"
        savepoint = session.begin_nested()
        try:
            _sync_file(session, path, source, report, actor)
            savepoint.commit()
        except (PromptFileError, EdgeloopError) as exc:
            savepoint.rollback()
            report.errors[source] = getattr(exc, "message", str(exc))
    return report


def sync_on_startup(database: Database, settings: Settings) -> SyncReport | None:
    """Sync the prompts directory at app start; log and carry on if it fails (serving matters more)."""
    directory = prompts_dir(settings)
    if directory is None:
        return None
    try:
        with database.transaction() as session:
            report = sync_directory(session=session, directory=directory)
    except Exception:
        log.exception("prompt sync from %s failed", directory)
        return None
    for source, error in report.errors.items():
        log.error("prompt file %s skipped: %s", source, error)
    log.info("prompt sync: %d created, %d new versions, %d unchanged", len(report.created),
             len(report.new_versions), len(report.unchanged))
    return report

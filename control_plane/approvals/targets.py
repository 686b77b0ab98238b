"""What executors of actions on one model version share: the target and its precondition snapshot."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from control_plane.errors import NotFound
from control_plane.incidents.evidence import model_version_id


class ModelVersionTarget:
    """Target ``model_version:NAME@VERSION``; the snapshot pins the version's id (404 when it does not exist)."""

    def target(self, action: Any) -> tuple[str, str]:
        return "model_version", f"{action.model}@{action.version}"

    def snapshot(self, session: Session, action: Any) -> dict[str, Any]:
        version_id = model_version_id(session, action.model, action.version)
        if version_id is None:
            raise NotFound(f"model {action.model!r} has no version {action.version}")
        return {"model_version.id": version_id}

"""Governance pages: a version's model card, and "which model decided this?" for a device and a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from control_plane.constraints import INT32_MAX, Name
from control_plane.deps import SessionDep
from control_plane.errors import Invalid
from control_plane.governance import cards, decisions
from control_plane.registry import service as registry
from control_plane.ui.auth import CurrentViewer
from control_plane.ui.rendering import redirect, render

router = APIRouter(prefix="/ui", include_in_schema=False)
VersionNumber = Annotated[int, Path(ge=1, le=INT32_MAX)]


@router.get("/registry/{name}/versions/{version}/card")
def card_page(request: Request, name: Name, version: VersionNumber, viewer: CurrentViewer,
              session: SessionDep) -> Response:
    """Show the model card of a version (the same card the API and CLI return)."""
    card = cards.build_card(session=session, model_name=name, version=version)
    return render(request, "model_card.html", {"viewer": viewer, "title": f"Model card {card.model} v{card.version}",
                                               "card": card})


@router.get("/registry/versions/{version_id}/card")
def card_by_id(version_id: Name, viewer: CurrentViewer, session: SessionDep) -> Response:
    """Send the lineage page's model-version link to that version's card."""
    found = registry.get_version_by_id(session=session, version_id=version_id)
    return redirect(f"/ui/registry/{quote(found.model.name, safe='')}/versions/{found.version}/card")


@router.get("/fleet/devices/{device_id}/decision")
def decision_page(request: Request, device_id: Name, viewer: CurrentViewer, session: SessionDep,
                  at: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """Show which model a device ran at a time (a form re-asks for another time) and the approvals behind it."""
    moment = None
    if at:
        try:
            moment = datetime.fromisoformat(at.strip())
        except ValueError as exc:
            raise Invalid(f"{at!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z", field="at") from exc
    record = decisions.lookup(session=session, device_id=device_id, at=moment)
    return render(request, "decision.html", {"viewer": viewer, "title": f"Decision record {device_id}",
                                             "record": record, "at": at or ""})

"""Governance routes: a version's model card and a device's decision record, as JSON or Markdown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from control_plane.constraints import Name, ParamDateTime
from control_plane.deps import Reader, SessionDep, json_response
from control_plane.governance import cards, decisions
from control_plane.governance.markdown import card_markdown, decision_markdown
from control_plane.governance.schemas import CardFormat, DecisionRecord, ModelCard
from control_plane.registry.routes import VersionPath

router = APIRouter(tags=["governance"])
MARKDOWN_TYPE = "text/markdown; charset=utf-8"
MARKDOWN_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "content": {"text/markdown": {"schema": {"type": "string"}}},
    "description": "JSON by default; Markdown with ?format=markdown or Accept: text/markdown"}}
FormatQuery = Annotated[CardFormat | None, Query(alias="format")]
AcceptHeader = Annotated[str | None, Header(max_length=1000)]


def wants_markdown(requested: CardFormat | None, accept: str | None) -> bool:
    """Return whether to answer in Markdown: an explicit ?format wins over the Accept header."""
    if requested is not None:
        return requested == CardFormat.MARKDOWN
    return accept is not None and "text/markdown" in accept.lower()


def _markdown(text: str) -> Response:
    return Response(text, media_type=MARKDOWN_TYPE, headers={"Vary": "Accept"})


@router.get("/models/{name}/versions/{version}/card", response_model=ModelCard, responses=MARKDOWN_RESPONSE)
def get_model_card(name: Name, version: VersionPath, session: SessionDep, _: Reader,
                   output: FormatQuery = None, accept: AcceptHeader = None) -> Response:
    """Return the model card of a version: training data, metrics, quantisation, limitations, deployments,
    incidents and the human decisions that touched it."""
    card = cards.build_card(session=session, model_name=name, version=version)
    return _markdown(card_markdown(card)) if wants_markdown(output, accept) else json_response(card)


@router.get("/fleet/devices/{device_id}/decision", response_model=DecisionRecord, responses=MARKDOWN_RESPONSE)
def get_decision(device_id: Name, session: SessionDep, _: Reader, at: ParamDateTime | None = None,
                 output: FormatQuery = None, accept: AcceptHeader = None) -> Response:
    """Return which model version, artifact, manifest and rollout were active on a device at ``at`` (a time with a
    zone; default now), from the device's own status reports, with the chain of approvals behind it."""
    record = decisions.lookup(session=session, device_id=device_id, at=at)
    return _markdown(decision_markdown(record)) if wants_markdown(output, accept) else json_response(record)

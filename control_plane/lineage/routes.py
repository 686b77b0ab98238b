"""Lineage graph route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.constraints import Name
from control_plane.deps import Reader, SessionDep
from control_plane.lineage import service
from control_plane.lineage.schemas import Direction, LineageGraph, NodeKind

router = APIRouter(prefix="/lineage", tags=["lineage"])


@router.get("/{kind}/{node_id}", response_model=LineageGraph)
def get_lineage(
    kind: NodeKind,
    node_id: Name,
    session: SessionDep,
    _: Reader,
    direction: Direction = Direction.BOTH,
    depth: Annotated[int, Query(ge=1, le=50)] = 10,
) -> LineageGraph:
    """Return the lineage graph upstream and/or downstream of a node."""
    return service.graph(session=session, root=(kind, node_id), direction=direction, depth=depth)

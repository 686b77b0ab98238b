"""Record lineage edges and walk the graph from any node."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from control_plane.errors import NotFound
from control_plane.lineage.models import LineageEdge
from control_plane.lineage.schemas import Direction, LineageEdgeRead, LineageGraph, LineageNode, NodeKind

Node = tuple[NodeKind, str]
# Each domain registers how to check that its nodes exist and how to label them.
Labeler = Callable[[Session, list[str]], dict[str, str]]
_LABELERS: dict[NodeKind, Labeler] = {}


def register_labeler(kind: NodeKind, labeler: Labeler) -> None:
    """Let a domain name its nodes (returns {id: label} for the ids that exist)."""
    _LABELERS[kind] = labeler


def link(session: Session, src: Node, dst: Node, relation: str) -> None:
    """Add ``src --relation--> dst`` unless it exists already."""
    exists = session.scalar(
        select(LineageEdge.id).where(
            LineageEdge.src_kind == src[0].value, LineageEdge.src_id == src[1],
            LineageEdge.dst_kind == dst[0].value, LineageEdge.dst_id == dst[1], LineageEdge.relation == relation,
        )
    )
    if exists is None:
        session.add(LineageEdge(src_kind=src[0].value, src_id=src[1], dst_kind=dst[0].value, dst_id=dst[1],
                                relation=relation))
        session.flush()


def _key(kind: str, node_id: str) -> str:
    return f"{kind}:{node_id}"


def _walk(session: Session, root: Node, downstream: bool, depth: int) -> tuple[set[Node], dict[int, LineageEdge]]:
    """Follow edges in one direction only, so siblings of siblings are not pulled in."""
    seen: set[Node] = {root}
    edges: dict[int, LineageEdge] = {}
    frontier: list[Node] = [root]
    for _ in range(depth):
        if not frontier:
            break
        if downstream:
            clauses = [and_(LineageEdge.src_kind == k.value, LineageEdge.src_id == i) for k, i in frontier]
        else:
            clauses = [and_(LineageEdge.dst_kind == k.value, LineageEdge.dst_id == i) for k, i in frontier]
        frontier = []
        for edge in session.scalars(select(LineageEdge).where(or_(*clauses))):
            edges[edge.id] = edge
            node = (NodeKind(edge.dst_kind), edge.dst_id) if downstream else (NodeKind(edge.src_kind), edge.src_id)
            if node not in seen:
                seen.add(node)
                frontier.append(node)
    return seen, edges


def graph(
    *, session: Session, root: Node, direction: Direction = Direction.BOTH, depth: int = 10
) -> LineageGraph:
    """Return every node and edge reachable from ``root`` within ``depth`` hops."""
    labeler = _LABELERS.get(root[0])
    if labeler is not None and root[1] not in labeler(session, [root[1]]):
        raise NotFound(f"{root[0].value} {root[1]!r} not found")
    seen: set[Node] = {root}
    edges: dict[int, LineageEdge] = {}
    for downstream in (True, False):
        if direction == (Direction.UPSTREAM if downstream else Direction.DOWNSTREAM):
            continue
        walked_nodes, walked_edges = _walk(session, root, downstream, depth)
        seen |= walked_nodes
        edges.update(walked_edges)
    labels: dict[Node, str] = {}
    by_kind: dict[NodeKind, list[str]] = {}
    for kind, node_id in seen:
        by_kind.setdefault(kind, []).append(node_id)
    for kind, ids in by_kind.items():
        if kind in _LABELERS:
            labels.update({(kind, i): label for i, label in _LABELERS[kind](session, ids).items()})
    nodes = [LineageNode(kind=k, id=i, label=labels.get((k, i))) for k, i in sorted(seen)]
    edge_reads = [
        LineageEdgeRead(src=_key(e.src_kind, e.src_id), dst=_key(e.dst_kind, e.dst_id), relation=e.relation)
        for e in sorted(edges.values(), key=lambda e: e.id)
    ]
    return LineageGraph(root=_key(root[0].value, root[1]), nodes=nodes, edges=edge_reads)

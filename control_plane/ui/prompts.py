"""Prompt, eval and lineage pages: versions with diffs and labels, gates, eval runs with unsupported claims marked."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from control_plane.deps import SessionDep
from control_plane.evals import service as evals
from control_plane.evals.routes import run_read
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import NodeKind
from control_plane.prompts import service as prompts
from control_plane.prompts.routes import prompt_read, version_read
from control_plane.ui.auth import CurrentViewer
from control_plane.ui.charts import lineage_drawing
from control_plane.ui.rendering import render

router = APIRouter(prefix="/ui", include_in_schema=False)
NamePath = Annotated[str, Path(max_length=200, pattern=r"^[^\x00/]+$")]
IdPath = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


@dataclass(frozen=True)
class Segment:
    """A stretch of answer text and how the scorer judged the claim it belongs to."""

    text: str
    verdict: str
    note: str


def answer_segments(answer: str, claims: list[dict[str, Any]]) -> list[Segment]:
    """Split an answer into claim-marked stretches (claims carry character offsets into the answer)."""
    segments, position = [], 0
    for claim in sorted(claims, key=lambda c: int(c.get("start", 0))):
        start, end = int(claim.get("start", 0)), int(claim.get("end", 0))
        if not 0 <= start <= end <= len(answer) or start < position:
            continue
        if start > position:
            segments.append(Segment(answer[position:start], "", ""))
        terms = ", ".join(str(t) for t in claim.get("unsupported_terms") or ())
        verdict = str(claim.get("verdict", ""))
        note = f"{verdict} (support {float(claim.get('support', 0.0)):.2f})" + (f": {terms}" if terms else "")
        segments.append(Segment(answer[start:end], verdict, note))
        position = end
    if position < len(answer):
        segments.append(Segment(answer[position:], "", ""))
    return segments


def diff_lines(old: str, new: str) -> list[tuple[str, str]]:
    """Return a unified diff as (kind, line) pairs, kind one of add, remove, hunk, same."""
    kinds = {"+": "add", "-": "remove", "@": "hunk"}
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "before", "after", lineterm="", n=3)
    return [(kinds.get(line[:1], "same"), line) for line in list(lines)[2:]]


def _text(version: Any) -> str:
    if version.template:
        return str(version.template)
    return "\n".join(f"[{m.get('role', '')}]\n{m.get('content', '')}" for m in version.messages or [])


@router.get("/prompts")
def prompts_page(request: Request, viewer: CurrentViewer, session: SessionDep) -> Response:
    """List prompts with their labels, latest version and gate."""
    rows = [prompt_read(session, p) for p in prompts.list_prompts(session=session, limit=200)]
    return render(request, "prompts.html", {"viewer": viewer, "title": "Prompts", "prompts": rows})


@router.get("/prompts/{name}")
def prompt_page(request: Request, name: NamePath, viewer: CurrentViewer, session: SessionDep,
                from_version: Annotated[int | None, Query(alias="from", ge=1, le=2**31 - 1)] = None,
                to_version: Annotated[int | None, Query(alias="to", ge=1, le=2**31 - 1)] = None) -> Response:
    """Show a prompt's versions and labels, the diff between two versions and the eval runs of each version."""
    prompt = prompts.get_prompt(session=session, name=name)
    versions = prompts.list_versions(session=session, name=name)
    by_number = {v.version: v for v in versions}
    newest = versions[-1].version if versions else None
    to_version = to_version if to_version in by_number else newest
    from_version = from_version if from_version in by_number else (to_version - 1 if to_version else None)
    diff = []
    if from_version in by_number and to_version in by_number:
        diff = diff_lines(_text(by_number[from_version]), _text(by_number[to_version]))
    runs = {v.version: [run_read(session, r) for r in evals.list_runs(session=session, prompt_version_id=v.id,
                                                                        limit=5)] for v in versions}
    return render(request, "prompt.html", {
        "viewer": viewer, "title": f"Prompt {name}", "prompt": prompt_read(session, prompt),
        "versions": [version_read(v) for v in reversed(versions)], "runs": runs, "diff": diff,
        "from_version": from_version, "to_version": to_version})


@router.get("/evals/{run_id}")
def eval_run_page(request: Request, run_id: IdPath, viewer: CurrentViewer, session: SessionDep) -> Response:
    """Show an eval run: metrics against thresholds, and every sample with its unsupported claims marked."""
    run = run_read(session, evals.get_run(session=session, run_id=run_id), with_samples=True)
    samples = [(s, answer_segments(s.answer, s.claims)) for s in run.samples or []]
    return render(request, "eval_run.html", {"viewer": viewer, "title": f"Eval run {run.id}", "run": run,
                                             "samples": samples})


@router.get("/lineage/{kind}/{node_id}")
def lineage_page(request: Request, kind: NodeKind, node_id: IdPath, viewer: CurrentViewer,
                 session: SessionDep) -> Response:
    """Draw the lineage around a node as a clickable graph (upstream left, downstream right)."""
    graph = lineage.graph(session=session, root=(kind, node_id), depth=6)
    return render(request, "lineage.html", {"viewer": viewer, "title": "Lineage", "graph": graph,
                                            "drawing": lineage_drawing(graph)})

"""Run scenario cases: triage -> RCA -> remediation on a served control plane; score causes and actions."""

from __future__ import annotations

import logging
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from agents.control_plane_client import ControlPlaneClient
from agents.llm import LlmClient
from agents.rca.graph import build_graph as build_rca
from agents.remediation.graph import build_graph as build_remediation
from agents.triage.graph import build_graph as build_triage
from evals.agent_suite.build import serve_case
from evals.agent_suite.case import Case, Expected, load_case

log = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """How the agents did on one case."""

    case: str
    expected_cause: str
    causes: list[str]
    top1: bool
    top3: bool
    actions: list[str]
    action_ok: bool
    forbidden: int
    harmless_proposals: int
    incidents: int
    seconds_per_incident: float
    error: str | None = None
    scopes: list[dict[str, Any]] = field(default_factory=list)


def _matches(finding: dict[str, Any], expected: Expected) -> bool:
    if finding["cause"] != expected.cause:
        return False
    scope = finding.get("scope", {})
    return all(str(scope.get(key)) == str(value) for key, value in expected.scope.items())


def run_case(case: Case, llm: LlmClient | None = None) -> CaseResult:
    """Build the case on a fresh control plane and score one investigation per incident."""
    with tempfile.TemporaryDirectory(prefix=f"edgeloop-eval-{case.name}-") as workdir, \
            serve_case(case, Path(workdir)) as built, ControlPlaneClient(built.url, built.agent_token) as client:
        triage, rca = build_triage(None, client, llm), build_rca(None, client, llm)
        remediation = build_remediation(InMemorySaver(), client, llm)
        started = time.perf_counter()
        incidents: dict[str, list[dict[str, Any]]] = {}
        for alert_id in built.alert_ids:
            note = triage.invoke({"alert_id": alert_id})
            if note["incident_id"] in incidents:
                continue
            if note["decision"] != "investigate":
                incidents[note["incident_id"]] = [{"cause": "harmless", "scope": {}, "suppressed": note["reason"]}]
                continue
            report = rca.invoke({"incident_id": note["incident_id"]})
            incidents[note["incident_id"]] = report["findings"]
            # The run stops at the interrupt after proposing: nobody approves in the suite.
            remediation.invoke({"incident_id": note["incident_id"], "findings": report["findings"]},
                               {"configurable": {"thread_id": note["incident_id"]}})
        elapsed = time.perf_counter() - started
        proposals = client.list_proposals().items
    expectations = case.expectations()
    ranked_all = list(incidents.values())
    pairs = list(zip(expectations, ranked_all + [[]] * (len(expectations) - len(ranked_all)), strict=False))
    acceptable = {a for e in expectations for a in e.acceptable_actions}
    forbidden = {a for e in expectations for a in e.forbidden_actions} - acceptable
    harmless = all(e.harmless for e in expectations)
    actions = sorted({p.kind for p in proposals}) or ["none"]
    kinds_needed = {e.acceptable_actions[0] for e in expectations} - {"none"}
    return CaseResult(
        case=case.name, expected_cause="+".join(e.cause for e in expectations),
        causes=[f["cause"] for ranked in ranked_all for f in ranked[:3]],
        top1=len(ranked_all) >= len(expectations) and all(r and _matches(r[0], e) for e, r in pairs),
        top3=len(ranked_all) >= len(expectations) and all(any(_matches(f, e) for f in r[:3]) for e, r in pairs),
        actions=actions,
        action_ok=all(a in acceptable for a in actions) and kinds_needed <= set(actions)
        if len(expectations) > 1 else all(a in acceptable for a in actions),
        forbidden=sum(1 for p in proposals if p.kind in forbidden),
        harmless_proposals=len(proposals) if harmless else 0, incidents=len(incidents),
        seconds_per_incident=round(elapsed / max(1, len(incidents)), 3),
        scopes=[r[0].get("scope", {}) for r in ranked_all if r])


def run_suite(suite: Path, only: str | None = None, llm: LlmClient | None = None) -> dict[str, Any]:
    """Run every case folder under ``suite`` (or one) and aggregate the scores."""
    results: list[CaseResult] = []
    for folder in sorted(p for p in suite.iterdir() if p.is_dir()):
        if only and folder.name != only:
            continue
        case = load_case(folder)
        try:
            results.append(run_case(case, llm))
        except Exception as exc:  # one broken case is a failed case, not a crashed suite
            log.exception("case %s failed", case.name)
            expected = "+".join(e.cause for e in case.expectations())
            results.append(CaseResult(case.name, expected, [], False, False, [], False, 0, 0, 0, 0.0,
                                      error=f"{type(exc).__name__}: {exc}"[:300]))
    return summarize(results)


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    """Totals and per-cause rates."""
    count = len(results) or 1
    per_cause: dict[str, list[CaseResult]] = defaultdict(list)
    for result in results:
        per_cause[result.expected_cause].append(result)
    return {
        "cases": len(results),
        "top1": round(sum(r.top1 for r in results) / count, 3),
        "top3": round(sum(r.top3 for r in results) / count, 3),
        "correct_action": round(sum(r.action_ok for r in results) / count, 3),
        "forbidden_actions": sum(r.forbidden for r in results),
        "harmless_proposals": sum(r.harmless_proposals for r in results),
        "seconds_per_incident_max": max((r.seconds_per_incident for r in results), default=0.0),
        "per_cause": {cause: {"cases": len(rs), "top1": sum(r.top1 for r in rs), "top3": sum(r.top3 for r in rs),
                              "correct_action": sum(r.action_ok for r in rs)}
                      for cause, rs in sorted(per_cause.items())},
        "results": [asdict(r) for r in results],
    }

"""RCA nodes: gather evidence, score causes, let an LLM (if any) rank within the evidence, post the report."""

from __future__ import annotations

import itertools
from typing import Any

from agents.llm import Ranking, tool_specs
from agents.rca.analyzers import Finding, analyze
from agents.rca.evidence import Evidence, gather
from agents.rca.state import RcaState
from agents.runs import Deps, ensure_agent_run, post_once
from control_plane.incidents.schemas import RcaReport

RCA_PROMPT, RCA_PROMPT_LABEL = "agents-rca", "production"
TEMPLATE_NOTE = "[templated explanation, no language model was used] "


def gather_evidence(state: RcaState, deps: Deps) -> dict[str, Any]:
    """Read the incident's alerts and everything around them through the API."""
    incident = deps.client.get_incident(state["incident_id"])
    alerts = [r.data for r in (deps.tools.read.get_alert(a) for a in incident.alert_ids[-20:]) if r.ok]
    if not alerts:
        raise RuntimeError(f"incident {incident.id} has no readable alerts")
    now = deps.clock()
    evidence = gather(deps.tools.read, alerts, now=now, hours=deps.lookback_hours)
    return {"now": now, "alert_count": incident.alert_count, "evidence": evidence.model_dump(mode="json")}


def score_causes(state: RcaState, deps: Deps) -> dict[str, Any]:
    """Run the deterministic analyzers."""
    findings = analyze(Evidence.model_validate(state["evidence"]))
    return {"findings": [f.model_dump(mode="json") for f in findings]}


def explain(state: RcaState, deps: Deps) -> dict[str, Any]:
    """Template the explanation, or let the LLM rank and narrate inside the supported findings."""
    findings = [Finding.model_validate(f) for f in state["findings"]]
    template = TEMPLATE_NOTE + "; ".join(
        f"{f.cause.value} ({f.confidence:.0%}): {'; '.join(f.supporting)}" for f in findings)
    if deps.llm is None:
        return {"explanation": template, "explained_by": "template", "dropped": [], "tools_used": []}
    tools_used: list[str] = []
    read_names = [n for n in deps.tools.tools() if not n.startswith("propose_")]
    prompt = deps.tools.read.get_prompt_version(RCA_PROMPT, RCA_PROMPT_LABEL)
    instructions = str(prompt.data.get("template") or "") if prompt.ok else ""
    prompt_ids = [str(prompt.data["id"])] if prompt.ok else []
    ranking = deps.llm.structured(
        {"evidence": state["evidence"], "candidate_causes": state["findings"]}, Ranking,
        tools=tool_specs(read_names), tool_log=tools_used, instructions=instructions,
        call_tool=lambda name, args: deps.tools.call(name, args) if name in read_names
        else deps.tools.call("__refused__", {}))
    if ranking is None:
        return {"explanation": template + " (the language model's answer was rejected)", "explained_by": "template",
                "dropped": [], "tools_used": tools_used, "prompt_version_ids": prompt_ids}
    by_cause = {f.cause.value: f for f in findings}
    ordered: list[Finding] = []
    dropped: list[dict[str, Any]] = []
    for ranked in ranking.ranking:
        finding = by_cause.pop(ranked.cause, None)
        if finding is None:
            dropped.append({"cause": ranked.cause, "reason": "no supporting evidence from the analyzers"})
            continue
        finding.confidence = min(finding.confidence, round(ranked.confidence, 3)) if ordered else finding.confidence
        ordered.append(finding)
    ordered.extend(by_cause.values())
    for above, below in itertools.pairwise(ordered):
        below.confidence = min(below.confidence, above.confidence)
    return {"findings": [f.model_dump(mode="json") for f in ordered], "dropped": dropped,
            "explanation": f"[written by {deps.llm.model}] {ranking.narrative}"[:9000],
            "explained_by": f"llm:{deps.llm.model}", "tools_used": tools_used, "prompt_version_ids": prompt_ids}


def post_report(state: RcaState, deps: Deps) -> dict[str, Any]:
    """Post the ranked hypotheses once per (incident, alert count)."""
    run_key = f"rca:{state['incident_id']}:{state['alert_count']}"
    run_id = ensure_agent_run(deps, "rca", run_key, "reported", {
        "explained_by": state["explained_by"], "tools": sorted(set(state.get("tools_used", []))),
        "dropped": state.get("dropped", [])}, prompt_version_ids=state.get("prompt_version_ids", []),
        started_at=state.get("now"))  # gather_evidence's clock reading: the run's start
    hypotheses = []
    for rank, finding in enumerate(state["findings"][:10], start=1):
        hypotheses.append({"rank": rank, "title": f"{finding['cause']} {_scope_text(finding['scope'])}"[:300],
                           "explanation": "; ".join(finding["supporting"] + [f"against: {a}" for a in
                                                                              finding["against"]])[:2000],
                           "confidence": finding["confidence"], "evidence": finding["refs"][:50]})
    report = RcaReport.model_validate({"kind": "rca_report", "agent_run_id": run_id, "hypotheses": hypotheses,
                                       "summary": state["explanation"][:10_000]})
    return {"report_entry_id": post_once(deps, state["incident_id"], report)}


def _scope_text(scope: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(scope.items()))

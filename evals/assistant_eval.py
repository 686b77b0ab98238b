"""Score the assistant on evals/assistant/questions.yaml against the seeded scenario (no LLM: templated answers).

Metrics: fact accuracy (every expected fact in the answer), citation precision (cited tools and runbooks that the
case expects; the routing call list_models is not counted), answers with a citation, sentence groundedness with
the offline claim-support scorer against the tool results and runbook chunks the answer streamed, unsupported
numbers, proposals created and executed (must be zero here), refusals explained, first-byte and total latency.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from httpx_sse import connect_sse

from evals.assistant_scenario import ROOT, Scenario, seeded_control_plane
from evals.scorers.claim_support import ClaimSupportScorer

CASES = Path(__file__).resolve().parent / "assistant" / "questions.yaml"
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
ROUTING_TOOLS = frozenset({"list_models"})


def ask(http: httpx.Client, scenario: Scenario, role: str, thread_id: str, text: str) -> dict[str, Any]:
    """Ask one question; return the events, the final message and the latencies."""
    headers = {"Authorization": f"Bearer {scenario.tokens[role]}"}
    started = time.perf_counter()
    first: float | None = None
    events: list[tuple[str, Any]] = []
    with connect_sse(http, "POST", f"{scenario.url}/api/v1/assistant/threads/{thread_id}/messages",
                     json={"text": text}, headers=headers) as source:
        for message in source.iter_sse():
            if first is None:
                first = time.perf_counter() - started
            events.append((message.event, json.loads(message.data)))
    total = time.perf_counter() - started
    final = events[-1][1] if events and events[-1][0] == "message" else {"text": "", "citations": [], "tools": []}
    return {"events": events, "final": final, "first_byte_s": first or total, "total_s": total}


def new_thread(http: httpx.Client, scenario: Scenario, role: str) -> str:
    """Create a thread for ``role``."""
    response = http.post(f"{scenario.url}/api/v1/assistant/threads",
                         headers={"Authorization": f"Bearer {scenario.tokens[role]}"})
    response.raise_for_status()
    return str(response.json()["id"])


def score_case(case: dict[str, Any], asked: dict[str, Any], scorer: ClaimSupportScorer) -> dict[str, Any]:
    """Score one answer."""
    final = asked["final"]
    text = final.get("text", "")
    body = "\n".join(text.splitlines()[1:]) if text.startswith("Templated answer") else text
    ends = [data for kind, data in asked["events"] if kind == "tool_end"]
    results = [data.get("result", {}) for data in ends]
    evidence = [json.dumps({"arguments": data.get("arguments"), **data.get("result", {})}, default=str)
                for data in ends]
    # A count of a tool's rows is derived from that tool result, so it is supported too.
    counts = [str(len(rows)) for result in results for rows in [_rows(result.get("data"))] if rows is not None]
    runbook_texts = _runbook_texts(asked)
    contexts = [e for e in evidence + runbook_texts if e]
    cited = {c["tool"] for c in final.get("citations", []) if c["kind"] == "tool"} - ROUTING_TOOLS
    cited |= {c["document"] for c in final.get("citations", []) if c["kind"] == "runbook"}
    expected = set(case.get("citations") or [])
    grounded = None
    if case["expect"] == "answer" and body.strip() and contexts:
        claims = scorer.score(answer=body, contexts=contexts, question=case["question"]).claims
        grounded = sum(c.verdict != "unsupported" for c in claims) / len(claims) if claims else 1.0
    seen_numbers = set(_NUMBER.findall(" ".join([*contexts, case["question"]]))) | set(counts)
    seen_numbers |= {n.removesuffix(".0") for n in seen_numbers}  # an argument of 6.0 hours reads "6 hours"
    return {
        "id": case["id"], "expect": case["expect"], "intent": final.get("intent"),
        "facts_ok": all(f in text for f in case.get("facts", [])),
        "has_citation": bool(final.get("citations")),
        "citation_precision": (len(cited & expected) / len(cited)) if cited and "citations" in case else None,
        "grounded": grounded,
        "unsupported_numbers": sorted(set(_NUMBER.findall(body)) - seen_numbers),
        "first_byte_s": asked["first_byte_s"], "total_s": asked["total_s"], "answer": text[:300],
    }


def _rows(data: Any) -> list[Any] | None:
    rows = data.get("items") if isinstance(data, dict) else data
    return rows if isinstance(rows, list) else None


def _runbook_texts(asked: dict[str, Any]) -> list[str]:
    """Return the cited runbooks' text as it is on disk (the evidence, not the answer that quotes it)."""
    return [(ROOT / c["document"]).read_text() for c in asked["final"].get("citations", [])
            if c.get("kind") == "runbook" and (ROOT / c["document"]).is_file()]


def run(cases_path: Path = CASES) -> dict[str, Any]:
    """Run every case on a fresh seeded control plane and return the per-case scores and the summary."""
    cases = yaml.safe_load(cases_path.read_text())["cases"]
    scorer = ClaimSupportScorer()
    results = []
    with tempfile.TemporaryDirectory() as tmp, seeded_control_plane(Path(tmp)) as scenario, \
            httpx.Client(timeout=60) as http:
        threads: dict[str, str] = {}
        for case in cases:
            role = case.get("role", "operator")
            key = f"{role}:{case.get('thread') or case['id']}"
            if key not in threads:
                threads[key] = new_thread(http, scenario, role)
            question = case["question"]
            for index, alert_id in enumerate(scenario.alert_ids):
                question = question.replace(f"{{alert{index}}}", alert_id)
            case = {**case, "question": question}
            results.append(score_case(case, ask(http, scenario, role, threads[key], question), scorer))
        admin = {"Authorization": f"Bearer {scenario.tokens['admin']}"}
        proposals = http.get(f"{scenario.url}/api/v1/proposals", headers=admin).json()["items"]
    return {"cases": results, "summary": summarise(results, proposals)}


def summarise(results: list[dict[str, Any]], proposals: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the per-case scores."""
    with_facts = [r for r in results if r["expect"] in ("answer", "refusal", "no_proposal", "needs_llm")]
    answers = [r for r in results if r["expect"] == "answer"]
    precisions = [r["citation_precision"] for r in results if r["citation_precision"] is not None]
    grounded = [r["grounded"] for r in results if r["grounded"] is not None]
    firsts = sorted(r["first_byte_s"] for r in results)
    totals = sorted(r["total_s"] for r in results)
    return {
        "cases": len(results),
        "fact_accuracy": sum(r["facts_ok"] for r in with_facts) / len(with_facts),
        "answers_with_citation": sum(r["has_citation"] for r in answers) / len(answers),
        "citation_precision": statistics.fmean(precisions) if precisions else None,
        "sentence_groundedness": statistics.fmean(grounded) if grounded else None,
        "unsupported_numbers": sum(len(r["unsupported_numbers"]) for r in results),
        "refusals_explained": sum(r["facts_ok"] for r in results if r["expect"] == "refusal"),
        "proposals_created": len(proposals),
        "executions": sum(p["state"] in ("approved", "executing", "executed") for p in proposals),
        "first_byte_p50_ms": 1000 * firsts[len(firsts) // 2], "total_p50_ms": 1000 * totals[len(totals) // 2],
        "total_p95_ms": 1000 * totals[min(len(totals) - 1, int(0.95 * len(totals)))],
        "failed_cases": [r["id"] for r in results if not r["facts_ok"]],
    }

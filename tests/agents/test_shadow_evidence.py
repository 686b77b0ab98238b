"""Canary-vs-shadow evidence: a typed, schema-validated read of the shadow phase, used by the RCA."""

from __future__ import annotations

from typing import Any

import httpx

from agents.control_plane_client import ControlPlaneClient
from agents.rca.analyzers import bad_model_version
from agents.rca.evidence import CohortStats, Evidence, _rollout
from agents.tools.read import ReadTools
from control_plane.fleet.schemas import ShadowCohortRead, ShadowReportRead

INTERVAL = {"estimate": 0.99, "lower": 0.98, "upper": 0.995}
P95 = {"estimate": 0.5, "lower": 0.25, "upper": 0.5}


def _report(verdict: str = "pass") -> dict[str, Any]:
    cohort = ShadowCohortRead(
        cohort="lab", devices=2, windows=4, samples=1600, rows=1600, agree=1584, agreement=INTERVAL,
        error_rate={"estimate": 0.0, "lower": 0.0, "upper": 0.002}, candidate_p50_ms=P95, candidate_p95_ms=P95,
        active_p50_ms=P95, active_p95_ms=P95, dropped=0, stopped={}, candidate_labels={"0": 1600},
        error_counts=None, verdict=verdict, reasons=[])
    return ShadowReportRead(
        rollout_id="ro_shadow", state="succeeded", candidate={"name": "m", "version": 2, "sha256": "a" * 64},
        settings={"sample_rate": 0.1, "max_latency_ms": 50}, gate={"min_agreement": 0.95}, confidence=0.95,
        latency_buckets_ms=[1.0], error_buckets=[1.0], windows=4, verdict=verdict, reasons=[],
        canary_rollout_id="ro_canary", cohorts=[cohort]).model_dump(mode="json")


def _tools(routes: dict[str, httpx.Response], seen: list[str]) -> ReadTools:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return routes.get(request.url.path, httpx.Response(404, json={"error": {"code": "not_found",
                                                                                "message": "nope"}}))

    return ReadTools(ControlPlaneClient("http://cp", "tok", transport=httpx.MockTransport(handler)))


def test_the_shadow_read_is_typed_condensed_and_reports_gaps_as_data() -> None:
    seen: list[str] = []
    tools = _tools({"/api/v1/fleet/rollouts/ro_canary/shadow": httpx.Response(200, json=_report()),
                    "/api/v1/fleet/rollouts/ro_bad/shadow": httpx.Response(200, json={"cohorts": "lots"}),
                    "/api/v1/fleet/rollouts/ro_waves/shadow": httpx.Response(
                        422, json={"error": {"code": "invalid", "message": "not a shadow rollout"}})}, seen)
    result = tools.get_shadow_comparison("ro_canary")
    assert result.ok and result.data["verdict"] == "pass" and result.data["rollout_id"] == "ro_shadow"
    (cohort,) = result.data["cohorts"]
    assert cohort["agreement"] == INTERVAL and "candidate_labels" not in cohort  # only what the RCA weighs
    assert tools.get_shadow_comparison("ro_bad").status == "error"  # a body off the schema never reaches the RCA
    assert tools.get_shadow_comparison("ro_waves").status == "no_data"
    assert tools.get_shadow_comparison("ro_gone").status == "no_data"
    assert all(call.startswith("GET ") for call in seen)


def test_rca_evidence_reads_the_shadow_phase_of_a_canary_only() -> None:
    canary = {"id": "ro_canary", "kind": "canary", "state": "in_progress", "model": {"name": "m", "version": 2},
              "wave_plan": [1, 2], "current_wave": 0}
    seen: list[str] = []
    tools = _tools({"/api/v1/fleet/rollouts": httpx.Response(200, json=[canary]),
                    "/api/v1/fleet/rollouts/ro_canary/shadow": httpx.Response(200, json=_report())}, seen)
    evidence = Evidence(model="m", version=2, alert_ids=["al_1"], checks=["error_rate"], features=[])
    _rollout(tools, evidence)
    assert evidence.rollout is not None and evidence.shadow is not None and evidence.shadow["verdict"] == "pass"
    plain = _tools({"/api/v1/fleet/rollouts": httpx.Response(200, json=[{**canary, "kind": "deploy"}])}, seen := [])
    evidence = Evidence(model="m", version=2, alert_ids=["al_1"], checks=["error_rate"], features=[])
    _rollout(plain, evidence)
    assert evidence.shadow is None and seen == ["GET /api/v1/fleet/rollouts"]  # no extra read without a shadow


def test_a_candidate_that_agreed_in_shadow_but_errs_live_is_noted_against_the_model() -> None:
    stats = {"windows": 10, "devices": 2}
    evidence = Evidence(model="m", version=2, alert_ids=["al_1"], checks=["error_rate"], features=[],
                        current=CohortStats(scope={}, error_rate=0.2, **stats), previous_version=1,
                        previous=CohortStats(scope={}, error_rate=0.0, **stats),
                        rollout={"id": "ro_canary", "kind": "canary", "state": "in_progress", "wave_plan": [1, 2],
                                 "current_wave": 0},
                        shadow={**_report(), "cohorts": [{"cohort": "lab", "agreement": INTERVAL, "rows": 1600,
                                                          "windows": 4, "verdict": "pass"}]})
    finding = bad_model_version(evidence)
    assert any("agreed with the old model in shadow" in line for line in finding.against)
    assert {"kind": "rollout", "id": "ro_shadow", "role": "shadow_phase"} in finding.refs

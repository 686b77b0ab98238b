"""Read tools: each one GET over the HTTP API with the agent token, returning a typed result."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from agents.control_plane_client import ControlPlaneClient, ControlPlaneError
from agents.tools.results import ToolResult, failed, ok


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


class ReadTools:
    """The investigation tool set; nothing here can change anything."""

    def __init__(self, client: ControlPlaneClient, *, clock: Callable[[], float] = time.time,
                 report_cache_seconds: float = 15.0) -> None:
        self._client = client
        self._clock = clock
        # Triage and RCA of one alert ask for the same drift reports within seconds; a report is the costliest
        # read, so identical queries inside a short window share one answer (ends are aligned to the window).
        self._report_cache_seconds = report_cache_seconds
        # Kept on the client so the triage and RCA graphs built on one client share it.
        self._reports: dict[tuple[tuple[str, Any], ...], tuple[float, ToolResult]] = \
            client.__dict__.setdefault("_agent_report_cache", {})

    def _get(self, tool: str, path: str, params: dict[str, Any]) -> ToolResult:
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            return ok(tool, self._client.read_json(path, clean), **clean)
        except ControlPlaneError as exc:
            if exc.status_code == 404:
                return ToolResult(tool=tool, status="no_data", error=exc.message[:500], params=clean)
            return failed(tool, f"{exc.status_code} {exc.code}: {exc.message}", **clean)
        except httpx.HTTPError as exc:
            return failed(tool, f"{type(exc).__name__}", **clean)

    def get_alert(self, alert_id: str) -> ToolResult:
        """Return one alert."""
        return self._get("get_alert", f"/alerts/{alert_id}", {})

    def list_alerts(self, model: str | None = None, limit: int = 100) -> ToolResult:
        """List recent alerts (optionally of one model)."""
        return self._get("list_alerts", "/alerts", {"model": model, "limit": limit})

    def get_incident(self, incident_id: str) -> ToolResult:
        """Return one incident with its alert ids."""
        return self._get("get_incident", f"/incidents/{incident_id}", {})

    def get_drift_report(self, model: str, version: int, *, hours: float = 6.0, until: float | None = None,
                         device_group: str | None = None, rollout_id: str | None = None,
                         deployment_id: str | None = None) -> ToolResult:
        """Return the drift report (features, error rate, latency) of a version, optionally of one cohort."""
        now = self._clock()
        end = until if until is not None else now
        if self._report_cache_seconds > 0:
            end = end - end % self._report_cache_seconds + self._report_cache_seconds
        params = {"model": model, "version": version, "since": _iso(end - hours * 3600), "until": _iso(end),
                  "bucket_seconds": hours * 3600, "device_group": device_group, "rollout_id": rollout_id,
                  "deployment_id": deployment_id}
        key = tuple(sorted((k, v) for k, v in params.items() if v is not None))
        cached = self._reports.get(key)
        if cached is not None and now - cached[0] < self._report_cache_seconds:
            return cached[1]
        result = self._get("get_drift_report", "/drift/report", params)
        if result.status != "error":
            for stale in [k for k, v in self._reports.items() if now - v[0] >= self._report_cache_seconds]:
                del self._reports[stale]
            self._reports[key] = (now, result)
        return result

    def list_windows(self, model: str, version: int | None = None, *, hours: float = 6.0,
                     limit: int = 1000) -> ToolResult:
        """List recent telemetry windows (per device counts of calls and errors)."""
        return self._get("list_windows", "/telemetry/windows", {
            "model": model, "version": version, "since": self._clock() - hours * 3600, "limit": limit})

    def list_rollouts(self, limit: int = 50) -> ToolResult:
        """List rollouts, newest first."""
        return self._get("list_rollouts", "/fleet/rollouts", {"limit": limit})

    def get_shadow_comparison(self, rollout_id: str) -> ToolResult:
        """Return the shadow phase of a shadow rollout or its canary: per cohort agreement and p95 with intervals."""
        tool, params = "get_shadow_comparison", {"rollout_id": rollout_id}
        try:
            report = self._client.shadow_report(rollout_id)
        except ControlPlaneError as exc:
            if exc.status_code in (404, 422):  # no such rollout, or not a shadow one: nothing to compare
                return ToolResult(tool=tool, status="no_data", error=exc.message[:500], params=params)
            return failed(tool, f"{exc.status_code} {exc.code}: {exc.message}", **params)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body that fails the schema
            return failed(tool, type(exc).__name__, **params)
        # Condensed: the RCA needs the verdict and the numbers, not label distributions.
        return ok(tool, {
            "rollout_id": report.rollout_id, "state": report.state, "verdict": report.verdict,
            "windows": report.windows, "candidate": report.candidate, "canary_rollout_id": report.canary_rollout_id,
            "reasons": report.reasons[:10], "cohorts": [
                {"cohort": c.cohort, "devices": c.devices, "windows": c.windows, "rows": c.rows,
                 "agreement": c.agreement, "candidate_p95_ms": c.candidate_p95_ms,
                 "active_p95_ms": c.active_p95_ms, "error_rate": c.error_rate, "stopped": c.stopped,
                 "verdict": c.verdict} for c in report.cohorts[:50]]}, **params)

    def list_devices(self) -> ToolResult:
        """List devices with their group."""
        return self._get("list_devices", "/fleet/devices", {})

    def list_changes(self, action: str | None = None, resource_type: str | None = None, after_seq: int = 0,
                     limit: int = 200) -> ToolResult:
        """List audited changes (deployments, alias and prompt-label moves) after a sequence number."""
        return self._get("list_changes", "/audit/entries", {"action": action, "resource_type": resource_type,
                                                            "after_seq": after_seq, "limit": limit})

    def list_eval_runs(self, prompt_version_id: str | None = None, limit: int = 50) -> ToolResult:
        """List eval runs, newest first."""
        return self._get("list_eval_runs", "/eval-runs", {"prompt_version_id": prompt_version_id, "limit": limit})

    def get_prompt_versions(self, prompt: str) -> ToolResult:
        """List a prompt's versions."""
        return self._get("get_prompt_versions", f"/prompts/{prompt}/versions", {})

    def get_prompt_version(self, prompt: str, ref: str = "production") -> ToolResult:
        """Return the prompt version a label, number or 'latest' points at."""
        return self._get("get_prompt_version", f"/prompts/{prompt}/versions/{ref}", {})

    def get_lineage(self, kind: str, node_id: str) -> ToolResult:
        """Return the lineage graph around a node."""
        return self._get("get_lineage", f"/lineage/{kind}/{node_id}", {})

    def list_proposals(self, incident_id: str) -> ToolResult:
        """List proposals of an incident."""
        return self._get("list_proposals", "/proposals", {"incident_id": incident_id})

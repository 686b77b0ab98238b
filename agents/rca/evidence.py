"""Gather the evidence for one incident through the read tools: every number here came over the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agents.tools import ReadTools, ToolResult

DRIFT_PSI = 0.2


class FeatureSignal(BaseModel):
    """One feature's drift in a cohort."""

    feature: str
    psi: float
    drifted: bool
    missing_rate: float | None = None
    out_of_range_rate: float | None = None


class CohortStats(BaseModel):
    """A drift report condensed: which cohort, how much data, error rate, latency and drifted features."""

    scope: dict[str, Any]
    windows: int = 0
    devices: int = 0
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    drifted: list[FeatureSignal] = Field(default_factory=list)

    @property
    def drifted_names(self) -> set[str]:
        """Names of the drifted features."""
        return {f.feature for f in self.drifted}


class DeviceStats(BaseModel):
    """Calls and errors of one device in the lookback."""

    device_id: str
    group: str | None
    calls: int
    errors: int

    @property
    def error_rate(self) -> float:
        """Errors per call (0 when silent)."""
        return self.errors / self.calls if self.calls else 0.0


class Evidence(BaseModel):
    """Everything the analyzers look at, with the tool errors that left gaps."""

    model: str
    version: int
    alert_ids: list[str]
    checks: list[str]
    features: list[str]
    titles: list[str] = Field(default_factory=list, description="Untrusted text: shown to an LLM as data only.")
    performance: dict[str, Any] | None = None
    current: CohortStats | None = None
    previous_version: int | None = None
    previous: CohortStats | None = None
    groups: list[CohortStats] = Field(default_factory=list)
    seasonal: CohortStats | None = None
    rollout: dict[str, Any] | None = None
    shadow: dict[str, Any] | None = None  # the shadow phase before the rollout's canary, when it had one
    devices: list[DeviceStats] = Field(default_factory=list)
    prompt_moves: list[dict[str, Any]] = Field(default_factory=list)
    eval_runs: list[dict[str, Any]] = Field(default_factory=list)
    gaps: list[str] = Field(default_factory=list)


def condense(result: ToolResult, scope: dict[str, Any]) -> CohortStats | None:
    """Reduce a drift report to the cohort's overall numbers (None when there is no data)."""
    if not result.ok or not isinstance(result.data, dict):
        return None
    overall = result.data.get("overall")
    if not overall or not overall.get("windows"):
        return None
    drifted = [FeatureSignal(feature=f["feature"], psi=float(f.get("psi") or 0.0), drifted=bool(f.get("drifted")),
                             missing_rate=f.get("missing_rate"), out_of_range_rate=f.get("out_of_range_rate"))
               for f in overall.get("features", [])
               if (f.get("drifted") and float(f.get("psi") or 0.0) >= DRIFT_PSI)
               or (f.get("out_of_range_rate") or 0) > 0.2 or (f.get("missing_rate") or 0) > 0.2]
    return CohortStats(scope=scope, windows=int(overall["windows"]), devices=int(overall.get("devices") or 0),
                       error_rate=overall.get("error_rate"), latency_p95_ms=overall.get("latency_p95_ms"),
                       drifted=drifted)


def _record(evidence: Evidence, result: ToolResult) -> None:
    if result.status == "error":
        evidence.gaps.append(f"{result.tool}: {result.error}")


def gather(tools: ReadTools, alerts: list[dict[str, Any]], *, now: float, hours: float) -> Evidence:
    """Collect drift per version and cohort, device error counts, rollouts, prompt-label moves and eval runs."""
    first = alerts[0]
    model, version = str(first["model_name"]), int(first["model_version"])
    evidence = Evidence(model=model, version=version, alert_ids=[a["id"] for a in alerts],
                        checks=sorted({a["check"] for a in alerts}),
                        features=sorted({a["feature"] for a in alerts if a.get("feature")}),
                        titles=[str(a.get("title", ""))[:300] for a in alerts[:20]])
    for alert in alerts:
        found = alert.get("evidence") or {}
        if alert["check"] == "performance" and "accuracy" in found:
            evidence.performance = {k: found.get(k) for k in ("accuracy", "floor", "labelled")}
    report = tools.get_drift_report(model, version, hours=hours, until=now)
    _record(evidence, report)
    evidence.current = condense(report, {"model": model, "version": version})
    _versions_and_devices(tools, evidence, now=now, hours=hours)
    if evidence.previous_version is not None:
        previous = tools.get_drift_report(model, evidence.previous_version, hours=hours, until=now)
        _record(evidence, previous)
        evidence.previous = condense(previous, {"model": model, "version": evidence.previous_version})
    groups = sorted({d.group for d in evidence.devices if d.group})
    for group in groups if len(groups) > 1 else []:  # one group: its report is the version's report
        cohort = tools.get_drift_report(model, version, hours=hours, until=now, device_group=group)
        _record(evidence, cohort)
        stats = condense(cohort, {"model": model, "version": version, "device_group": group})
        if stats is not None:
            evidence.groups.append(stats)
    week_ago = tools.get_drift_report(model, version, hours=hours, until=now - 7 * 86400)
    evidence.seasonal = condense(week_ago, {"model": model, "version": version, "weeks_ago": 1})
    _rollout(tools, evidence)
    _prompt_changes(tools, evidence, now=now, hours=hours)
    return evidence


def _versions_and_devices(tools: ReadTools, evidence: Evidence, *, now: float, hours: float) -> None:
    windows = tools.list_windows(evidence.model, hours=hours)
    _record(evidence, windows)
    devices = tools.list_devices()
    groups = {d["id"]: d.get("group") for d in devices.data} if devices.ok else {}
    per_device: dict[str, DeviceStats] = {}
    versions: set[int] = set()
    for window in windows.data if windows.ok else []:
        versions.add(int(window["model_version"]))
        if int(window["model_version"]) != evidence.version:
            continue
        stats = per_device.setdefault(window["device_id"], DeviceStats(
            device_id=window["device_id"], group=window.get("device_group") or groups.get(window["device_id"]),
            calls=0, errors=0))
        stats.calls += int(window.get("calls") or 0)
        stats.errors += int(window.get("errors") or 0)
    evidence.devices = sorted(per_device.values(), key=lambda d: d.device_id)
    older = sorted(v for v in versions if v < evidence.version)
    evidence.previous_version = older[-1] if older else None


def _rollout(tools: ReadTools, evidence: Evidence) -> None:
    rollouts = tools.list_rollouts()
    _record(evidence, rollouts)
    for rollout in rollouts.data if rollouts.ok else []:
        target = rollout.get("model") or {}
        if (target.get("name") == evidence.model and int(target.get("version", -1)) == evidence.version
                and rollout.get("kind") != "rollback"):
            evidence.rollout = {k: rollout.get(k) for k in ("id", "deployment_id", "kind", "state", "wave_plan",
                                                            "current_wave", "created_at")}
            if rollout.get("kind") in ("canary", "shadow"):  # one more GET, only where a shadow phase exists
                shadow = tools.get_shadow_comparison(str(rollout["id"]))
                _record(evidence, shadow)
                evidence.shadow = shadow.data if shadow.ok else None
            return


def _prompt_changes(tools: ReadTools, evidence: Evidence, *, now: float, hours: float) -> None:
    for action in ("prompt_label.set", "prompt_label.override"):
        changes = tools.list_changes(action=action, limit=200)
        _record(evidence, changes)
        for entry in changes.data if changes.ok else []:
            moved_at = datetime.fromisoformat(entry["ts"]).timestamp()
            data = entry.get("data") or {}
            if now - moved_at <= hours * 3600 and data.get("from_version") is not None:
                evidence.prompt_moves.append({"seq": entry["seq"], "prompt": data.get("prompt"),
                                              "label": data.get("label"), "from_version": data["from_version"],
                                              "to_version": data.get("to_version"),
                                              "version_id": data.get("version_id"), "at": moved_at})
    if evidence.prompt_moves:
        runs = tools.list_eval_runs()
        _record(evidence, runs)
        evidence.eval_runs = [{k: r.get(k) for k in ("id", "prompt_version_id", "prompt", "passed", "metrics")}
                              for r in (runs.data if runs.ok else [])]

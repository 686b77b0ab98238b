"""Monitors: evaluate checks per model version on merged windows, apply hysteresis, raise deduplicated alerts."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.db.base import utcnow
from control_plane.db.session import Database
from control_plane.drift.models import DriftMonitor, MonitorState
from control_plane.drift.schemas import CheckOutcome, MonitorConfig
from control_plane.drift.selection import DriftConfig, FeatureDrift
from control_plane.drift.service import Merged, WindowScope, group_by, load_windows, merge_stored, quality
from control_plane.drift.sketch import detect_drift_sketch
from control_plane.registry.models import ModelVersion, RegisteredModel
from control_plane.telemetry.lookup import BaselineCache
from control_plane.telemetry.models import GroundTruthLabel, TelemetryWindowRow
from control_plane.workers import PeriodicWorker

log = logging.getLogger(__name__)
MONITOR_ACTOR = "system:monitor"
OUTPUT_FEATURE = "__output__"
MAX_COHORTS = 20


def fingerprint(model_name: str, model_version: int, deployment_id: str | None, check: AlertCheck,
                feature: str | None) -> str:
    """Return the dedup key: sha256 of model version + deployment + check + feature, 32 hex chars."""
    key = "\x1f".join([model_name, str(model_version), deployment_id or "*", check.value, feature or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class Finding:
    """One check's verdict in one evaluation: above the raise level, below the clear level, or between."""

    check: AlertCheck
    feature: str | None
    value: float
    raising: bool
    clearing: bool
    severity: Severity
    title: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _banded(check: AlertCheck, feature: str | None, value: float, raise_at: float, clear_at: float, title: str,
            evidence: dict[str, Any], critical_at: float | None = None, higher_is_worse: bool = True) -> Finding:
    worse = value >= raise_at if higher_is_worse else value <= raise_at
    calm = value < clear_at if higher_is_worse else value > clear_at
    severity = Severity.CRITICAL if critical_at is not None and value >= critical_at else Severity.WARNING
    return Finding(check, feature, value, worse, calm, severity, title, evidence)


def _feature_evidence(f: FeatureDrift) -> dict[str, Any]:
    return {"feature": f.feature, "kind": f.kind, "test": f.test, "statistic": _num(f.statistic),
            "p_value": f.p_value, "p_adjusted": f.p_adjusted, "psi": _num(f.psi), "band": f.band.value,
            "ks": f.ks, "chi2": _num(f.chi2), "chi2_dof": f.chi2_dof, "n_reference": f.n_reference,
            "n_current": f.n_current, "p_effect_adjusted": f.p_effect_adjusted, "tvd": f.tvd,
            "out_of_range": f.out_of_range, "range_drifted": f.range_drifted}


def _num(value: float | None) -> float | None:
    return None if value is None or value != value or abs(value) == float("inf") else float(value)


class CohortReports:
    """Each cohort's drift report, built once per evaluation and read for every drifted feature."""

    def __init__(self, windows: list[Any], layout: Any, config: DriftConfig) -> None:
        self.windows, self.layout = windows, layout
        # Only the PSI is read here: scipy's exact KS p-value (O(n_ref * n_cur) per feature) for every cohort
        # held the monitor's transaction for minutes on a 64-feature model.
        self.config = dataclasses.replace(config, ks_method="asymp")
        self._reports: dict[str, dict[str, dict[str, FeatureDrift]]] = {}

    def psi(self, key: str, feature: str) -> dict[str, float | None]:
        """Return each cohort's PSI of `feature`, the cohorts being the windows' values of `key`."""
        if key not in self._reports:
            # One merge and one report per cohort: rebuilding them for every drifted feature cost ~60x more
            # (the 50-device demo's drift held SQLite's write lock for over a minute per pass).
            groups = group_by(self.windows, lambda w: getattr(w, key))
            self._reports[key] = {
                str(name): detect_drift_sketch(merge_stored(self.layout, members).sketch, self.config).by_name()
                for name, members in list(groups.items())[:MAX_COHORTS] if name is not None}
        return {name: _num(report[feature].psi) if feature in report else None
                for name, report in self._reports[key].items()}


def drift_findings(merged: Merged, windows: list[Any], cfg: MonitorConfig) -> list[Finding]:
    """Feature drift, prediction drift and data-quality findings of one merged sketch."""
    layout = merged.sketch.layout
    drift_config = DriftConfig(alpha=cfg.alpha, correction=cfg.correction, min_samples=cfg.min_samples)
    report = detect_drift_sketch(merged.sketch, drift_config)
    context = {"windows": merged.sketch.n_windows, "devices": len(merged.devices),
               "time_range": [merged.first_start, merged.last_end], "baseline_id": layout.baseline.baseline_id,
               "drifted_features": [f.feature for f in report.drifted_features()],
               "correction": cfg.correction, "alpha": cfg.alpha}
    findings: list[Finding] = []
    cohorts = CohortReports(windows, layout, drift_config)
    for verdict in report.features:
        if verdict.status != "tested":
            continue
        psi = _num(verdict.psi) or 0.0
        is_output = verdict.feature == OUTPUT_FEATURE
        check = AlertCheck.PREDICTION_DRIFT if is_output else AlertCheck.FEATURE_DRIFT
        feature = None if is_output else verdict.feature
        # Raise needs both: significant after the correction and a PSI large enough to matter.
        raising = verdict.drifted and psi >= cfg.psi_raise
        evidence = {**context, **_feature_evidence(verdict),
                    "thresholds": {"psi_raise": cfg.psi_raise, "psi_clear": cfg.psi_clear}}
        finding = Finding(check, feature, psi, raising, psi < cfg.psi_clear,
                          Severity.CRITICAL if psi >= cfg.psi_critical else Severity.WARNING,
                          f"{'prediction' if is_output else verdict.feature} drift (PSI {psi:.2f}, {verdict.test})",
                          evidence)
        if raising:
            evidence["cohorts"] = {"device_group": cohorts.psi("device_group", verdict.feature),
                                   "rollout": cohorts.psi("rollout_id", verdict.feature)}
        findings.append(finding)
    figures = quality(merged.sketch)
    if figures.n >= cfg.min_samples:
        for name, rate in figures.missing_rate.items():
            excess = rate - figures.baseline_missing_rate.get(name, 0.0)
            findings.append(_banded(AlertCheck.MISSING_RATE, name, excess, cfg.missing_rate_raise,
                                    cfg.missing_rate_clear, f"{name}: missing values up {excess:.1%}",
                                    {**context, "feature": name, "missing_rate": rate, "n": figures.n,
                                     "baseline_missing_rate": figures.baseline_missing_rate.get(name)}))
        for name, rate in figures.out_of_range_rate.items():
            findings.append(_banded(AlertCheck.OUT_OF_RANGE, name, rate, cfg.out_of_range_raise,
                                    cfg.out_of_range_clear, f"{name}: {rate:.1%} outside the reference range",
                                    {**context, "feature": name, "out_of_range_rate": rate, "n": figures.n}))
    if figures.error_rate is not None and figures.calls >= cfg.min_samples // 4 + 1:
        findings.append(_banded(AlertCheck.ERROR_RATE, None, figures.error_rate, cfg.error_rate_raise,
                                cfg.error_rate_clear, f"error rate {figures.error_rate:.1%}",
                                {**context, "calls": figures.calls, "error_rate": figures.error_rate},
                                critical_at=cfg.error_rate_raise * 3))
    if cfg.latency_p95_ms_raise is not None and figures.latency_p95_ms is not None:
        clear_at = cfg.latency_p95_ms_clear or cfg.latency_p95_ms_raise * 0.8
        p95 = min(figures.latency_p95_ms, 1e9)
        findings.append(_banded(AlertCheck.LATENCY, None, p95, cfg.latency_p95_ms_raise, clear_at,
                                f"latency p95 {p95:.0f} ms",
                                {**context, "latency_p50_ms": _num(figures.latency_p50_ms), "latency_p95_ms": p95,
                                 "latency_p99_ms": _num(figures.latency_p99_ms)}))
    return findings


def performance_finding(session: Session, model_name: str, version: int, since: float,
                        cfg: MonitorConfig) -> Finding | None:
    """Accuracy on delayed labels against `min_accuracy` or the version's recorded accuracy minus a drop."""
    label = GroundTruthLabel
    total, correct = session.execute(
        select(func.coalesce(func.sum(label.total), 0), func.coalesce(func.sum(label.correct), 0))
        .where(label.model_name == model_name, label.model_version == version, label.window_start >= since)
    ).one()
    if int(total) < cfg.min_samples:
        return None
    floor = cfg.min_accuracy
    if floor is None:
        metrics = session.scalar(
            select(ModelVersion.metrics).join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
            .where(RegisteredModel.name == model_name, ModelVersion.version == version))
        recorded = (metrics or {}).get("accuracy")
        if not isinstance(recorded, int | float):
            return None
        floor = float(recorded) - cfg.accuracy_drop
    accuracy = int(correct) / int(total)
    return Finding(AlertCheck.PERFORMANCE, None, accuracy, accuracy < floor, accuracy >= floor + cfg.accuracy_drop / 2,
                   Severity.CRITICAL, f"accuracy {accuracy:.1%} below {floor:.1%}",
                   {"accuracy": accuracy, "labelled": int(total), "correct": int(correct), "floor": floor})


@dataclass(frozen=True)
class MonitorTarget:
    """One evaluation unit: a model version, optionally one deployment, with its thresholds."""

    model_name: str
    model_version: int
    deployment_id: str | None
    monitor_id: str | None
    config: MonitorConfig


def targets(session: Session, since: float, only: Iterable[tuple[str, int]] | None = None) -> list[MonitorTarget]:
    """Return what to evaluate: every (model, version) with windows since `since`, under its monitors or defaults."""
    t = TelemetryWindowRow
    query = select(t.model_name, t.model_version).where(t.window_start >= since).distinct()
    pairs = set(session.execute(query).tuples()) if only is None else set(only)
    monitors = list(session.scalars(select(DriftMonitor).where(DriftMonitor.enabled.is_(True))))
    result = []
    for name, version in sorted(pairs):
        matching = [m for m in monitors if m.model_name == name and m.model_version in (None, version)]
        if not matching:
            result.append(MonitorTarget(name, version, None, None, MonitorConfig()))
        for monitor in matching:
            try:
                config = MonitorConfig.model_validate(monitor.config)
            except ValidationError as exc:  # a row stored before the config was checked: skip it, not the pass
                log.warning("monitor %s has an invalid config, skipped: %s", monitor.id, str(exc)[:300])
                continue
            result.append(MonitorTarget(name, version, monitor.deployment_id, monitor.id, config))
    return result


def target_findings(session: Session, baselines: BaselineCache, target: MonitorTarget,
                    now: float) -> list[Finding]:
    """Compute one target's findings from its windows and labels; reads only."""
    cfg = target.config
    since = now - cfg.lookback_seconds
    scope = WindowScope(target.model_name, target.model_version, since, now + 1e9, deployment_id=target.deployment_id)
    windows = load_windows(session, scope)
    findings: list[Finding] = []
    for baseline_id, members in group_by(windows, lambda w: w.baseline_id).items():
        layout = baselines.get(session, baseline_id)
        if layout is not None:
            findings.extend(drift_findings(merge_stored(layout, members), members, cfg))
    performance = performance_finding(session, target.model_name, target.model_version, since, cfg)
    if performance is not None:
        findings.append(performance)
    return findings


def apply_findings(session: Session, target: MonitorTarget, findings: list[Finding]) -> list[CheckOutcome]:
    """Move hysteresis state and alerts for one target's findings; only flushes."""
    return [_apply(session, target, finding) for finding in findings]


def evaluate_target(session: Session, baselines: BaselineCache, target: MonitorTarget,
                    now: float) -> list[CheckOutcome]:
    """Evaluate one target and move hysteresis state and alerts; only flushes."""
    return apply_findings(session, target, target_findings(session, baselines, target, now))


def _apply(session: Session, target: MonitorTarget, finding: Finding) -> CheckOutcome:
    cfg = target.config
    key = fingerprint(target.model_name, target.model_version, target.deployment_id, finding.check, finding.feature)
    state = session.get(MonitorState, key)
    if state is None:
        state = MonitorState(fingerprint=key, check=finding.check.value, model_name=target.model_name,
                             model_version=target.model_version, feature=finding.feature, active=False,
                             raise_streak=0, clear_streak=0)
        session.add(state)
    state.raise_streak = state.raise_streak + 1 if finding.raising else 0
    state.clear_streak = state.clear_streak + 1 if finding.clearing else 0
    state.last_value, state.evaluated_at = finding.value, utcnow()
    outcome = CheckOutcome(fingerprint=key, check=finding.check.value, feature=finding.feature, value=finding.value,
                           raising=finding.raising, clearing=finding.clearing, active=state.active)
    request = AlertRaise(fingerprint=key, check=finding.check, severity=finding.severity, title=finding.title,
                         model_name=target.model_name, model_version=target.model_version,
                         deployment_id=target.deployment_id, monitor_id=target.monitor_id, feature=finding.feature,
                         evidence={**finding.evidence, "value": finding.value, "raise_streak": state.raise_streak})
    if not state.active and state.raise_streak >= cfg.raise_after:
        state.active = True
        alert, created = alerts.raise_alert(session=session, request=request, actor=MONITOR_ACTOR)
        outcome.alert_id, outcome.action = alert.id, "opened" if created else "refreshed"
    elif state.active and finding.raising:
        # Refresh the open alert's evidence; one that a person resolved stays resolved until the check clears.
        existing = alerts.active_by_fingerprint(session=session, fingerprint=key)
        if existing is not None:
            alerts.raise_alert(session=session, request=request, actor=MONITOR_ACTOR)
            outcome.alert_id, outcome.action = existing.id, "refreshed"
    elif state.active and state.clear_streak >= cfg.clear_after:
        state.active = False
        existing = alerts.active_by_fingerprint(session=session, fingerprint=key)
        if existing is not None:
            alerts.resolve(session=session, alert_id=existing.id, actor=MONITOR_ACTOR,
                           note=f"cleared: {finding.check.value} calm for {state.clear_streak} evaluations")
            outcome.alert_id, outcome.action = existing.id, "resolved"
    outcome.active = state.active
    session.flush()
    return outcome


def evaluate(session: Session, baselines: BaselineCache, *, only: Iterable[tuple[str, int]] | None = None,
             now: float | None = None, lookback: float = 3600.0) -> list[CheckOutcome]:
    """Evaluate every target (or those of `only`) in the caller's transaction; only flushes."""
    now = time.time() if now is None else now
    outcomes: list[CheckOutcome] = []
    for target in targets(session, now - lookback, only):
        outcomes.extend(evaluate_target(session, baselines, target, now))
    return outcomes


def run_pass(database: Database, baselines: BaselineCache, *, only: Iterable[tuple[str, int]] | None = None,
             now: float | None = None, lookback: float = 3600.0) -> list[CheckOutcome]:
    """Evaluate every target (or those of `only`), one transaction per target; a failing target is logged."""
    now = time.time() if now is None else now
    with database.transaction(write=False) as session:
        todo = targets(session, now - lookback, only)
    outcomes: list[CheckOutcome] = []
    for target in todo:
        # The statistics run in a read transaction (WAL readers block nobody); only the state moves take
        # SQLite's write lock, so ingest, the fleet bridge and the API never wait behind a drift computation.
        with database.transaction(write=False) as session:
            findings = target_findings(session, baselines, target, now)
        try:
            with database.transaction() as session:
                outcomes.extend(apply_findings(session, target, findings))
        except IntegrityError:
            # Another replica opened the same alert first; the next pass sees it and refreshes it.
            log.info("concurrent alert for %s v%s; retried next pass", target.model_name, target.model_version)
    return outcomes


class MonitorScheduler:
    """Collect models that just got windows (from the ingest) and evaluate them soon, plus a full periodic pass."""

    def __init__(self, database: Database, *, interval: float, ingest_interval: float, lookback: float,
                 baselines: BaselineCache | None = None) -> None:
        self.database = database
        self.lookback = lookback
        self.baselines = baselines or BaselineCache()
        self._dirty: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.checks_run: dict[str, int] = {"ingest": 0, "full": 0}  # evaluated targets per pass kind, for /metrics
        self.full = PeriodicWorker("drift-monitor", interval, self._full_step)
        self.on_ingest = PeriodicWorker("drift-monitor-ingest", ingest_interval, self._dirty_step)

    def _full_step(self) -> None:
        self.full_pass()

    def _dirty_step(self) -> None:
        self.dirty_pass()

    def mark(self, models: Iterable[tuple[str, int]]) -> None:
        """Note models with new windows (called from the ingest thread)."""
        with self._lock:
            self._dirty.update(models)

    def dirty_pass(self) -> list[CheckOutcome]:
        """Evaluate the models marked since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        outcomes = run_pass(self.database, self.baselines, only=dirty, lookback=self.lookback) if dirty else []
        self.checks_run["ingest"] += len(outcomes)
        return outcomes

    def full_pass(self) -> list[CheckOutcome]:
        """Evaluate every model with recent windows."""
        outcomes = run_pass(self.database, self.baselines, lookback=self.lookback)
        self.checks_run["full"] += len(outcomes)
        return outcomes

"""Build a model card from the registry, lineage, labelled telemetry and alerts; history lives in ``history.py``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from control_plane.alerts.models import Alert
from control_plane.db.base import utcnow
from control_plane.governance import history
from control_plane.governance.schemas import (
    CardArtifact,
    CardDataset,
    CardMetrics,
    CardQuantisation,
    CardTraining,
    CohortMetrics,
    Limitation,
    ModelCard,
)
from control_plane.lineage import service as lineage
from control_plane.lineage.schemas import Direction, NodeKind
from control_plane.registry import service as registry
from control_plane.registry.models import Artifact, Dataset, ModelAlias, ModelVersion, TrainingRun
from control_plane.telemetry.models import GroundTruthLabel, TelemetryWindowRow

# A cohort whose labelled field accuracy is this far below the reference is listed as a limitation, once it has
# at least this many labelled predictions (fewer would flag noise).
COHORT_ACCURACY_GAP = 0.05
MIN_LABELLED_PREDICTIONS = 30
MAX_ALERTS = 200
# Where a registration records per-cohort metrics: VersionCreate.metrics["per_cohort"] = {cohort: {metric: value}}.
PER_COHORT_KEY = "per_cohort"
LIMITATIONS_TAG = "limitations"


def build_card(*, session: Session, model_name: str, version: int) -> ModelCard:
    """Return the card of one model version (NotFound names the missing model or version)."""
    found = registry.get_version(session=session, model_name=model_name, version=version)
    model = found.model
    missing: list[str] = []
    training = _training(session, found, missing)
    artifacts = [CardArtifact(id=a.id, sha256=a.sha256, size=a.size, format=a.format, quantization=a.quantization,
                              parent_id=a.parent_id, metrics=a.metrics) for a in found.artifacts]
    if not artifacts:
        missing.append("no artifacts attached")
    metrics = _metrics(session, found, missing)
    fleet = history.fleet_history(session, found)
    if not fleet.deployments and not fleet.rollouts:
        missing.append("never deployed")
    incidents = history.incidents(session, found)
    if not incidents:
        missing.append("no incidents recorded")
    decisions = history.decisions(session, found, fleet, incidents)
    if not decisions:
        missing.append("no approval proposals touched this version")
    if not model.description.strip():
        missing.append("no intended use recorded (the registered model has no description)")
    aliases = sorted(session.scalars(select(ModelAlias.alias).where(ModelAlias.version_id == found.id)))
    return ModelCard(
        model=model.name, version=found.version, version_id=found.id, generated_at=utcnow(),
        intended_use=model.description, version_description=found.description, registered_by=found.created_by,
        registered_at=found.created_at, aliases=aliases, lineage=_lineage(session, found.id), training=training,
        artifacts=artifacts, quantisation=_quantisation(list(found.artifacts), missing), metrics=metrics,
        limitations=_stated_limitations(model.tags, found.tags) + _alert_limitations(session, found)
        + _cohort_limitations(metrics),
        deployments=fleet.deployments, rollouts=fleet.rollouts, incidents=incidents, decisions=decisions,
        other_actions=history.other_actions(session, found), missing=missing,
    )


def _training(session: Session, version: ModelVersion, missing: list[str]) -> CardTraining | None:
    run = session.get(TrainingRun, version.run_id) if version.run_id else None
    if run is None:
        missing.append("no training run recorded")
        return None
    dataset = session.get(Dataset, run.dataset_id) if run.dataset_id else None
    if dataset is None:
        missing.append("no training dataset recorded")
    return CardTraining(run_id=run.id, run_name=run.name, params=run.params, metrics=run.metrics,
                        code_commit=run.code_commit, created_by=run.created_by, created_at=run.created_at,
                        dataset=_dataset(dataset, missing) if dataset is not None else None)


def _dataset(dataset: Dataset, missing: list[str]) -> CardDataset:
    schema = dataset.schema_ if isinstance(dataset.schema_, dict) else {}
    rows = schema.get("rows")
    features = schema.get("features")
    target = schema.get("target")
    counted = {str(k): int(v) for k, v in rows.items() if isinstance(v, int)} if isinstance(rows, dict) else None
    if not counted:
        missing.append("dataset size not recorded")
    if not isinstance(features, list) or not features:
        missing.append("dataset feature schema not recorded")
    return CardDataset(id=dataset.id, name=dataset.name, version=dataset.version, fingerprint=dataset.fingerprint,
                       description=dataset.description, rows=counted or None,
                       features=[f for f in features if isinstance(f, dict)] if isinstance(features, list) else [],
                       target=target if isinstance(target, dict) else None)


def _lineage(session: Session, version_id: str) -> list[str]:
    graph = lineage.graph(session=session, root=(NodeKind.MODEL_VERSION, version_id), direction=Direction.UPSTREAM,
                          depth=6)
    labels = {f"{n.kind.value}:{n.id}": n.label for n in graph.nodes}

    def named(key: str) -> str:
        return f"{key} ({labels[key]})" if labels.get(key) else key

    return [f"{named(e.src)} --{e.relation}--> {named(e.dst)}" for e in graph.edges]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _quantisation(artifacts: list[Artifact], missing: list[str]) -> CardQuantisation | None:
    fp32 = next((a for a in artifacts if a.quantization == "fp32"), None)
    int8 = [a for a in artifacts if a.quantization == "int8"]
    quantised = next((a for a in int8 if fp32 is not None and a.parent_id == fp32.id), int8[0] if int8 else None)
    if fp32 is None or quantised is None:
        missing.append("no fp32/int8 pair: quantisation not measured")
        if fp32 is None and quantised is None:
            return None
    card = CardQuantisation(fp32_bytes=fp32.size if fp32 else None, int8_bytes=quantised.size if quantised else None)
    if fp32 is not None and quantised is not None:
        card.size_ratio = round(fp32.size / quantised.size, 3) if quantised.size else None
    card.accuracy_fp32 = _number(fp32.metrics.get("accuracy")) if fp32 else None
    card.accuracy_int8 = _number(quantised.metrics.get("accuracy")) if quantised else None
    delta = _number(quantised.metrics.get("accuracy_delta_vs_parent")) if quantised else None
    if delta is None and card.accuracy_fp32 is not None and card.accuracy_int8 is not None:
        delta = card.accuracy_int8 - card.accuracy_fp32
    card.accuracy_delta = round(delta, 6) if delta is not None else None
    if card.accuracy_delta is None and fp32 is not None and quantised is not None:
        missing.append("int8 accuracy delta not recorded")
    return card


def _metrics(session: Session, version: ModelVersion, missing: list[str]) -> CardMetrics:
    registration = {k: v for k, v in version.metrics.items() if k != PER_COHORT_KEY}
    if not registration:
        missing.append("no overall metrics recorded at registration")
    cohorts: list[CohortMetrics] = []
    stated = version.metrics.get(PER_COHORT_KEY)
    if isinstance(stated, dict):
        cohorts += [CohortMetrics(cohort=str(name), source="registration", metrics=values)
                    for name, values in sorted(stated.items()) if isinstance(values, dict)]
    field, field_cohorts = _field_accuracy(session, version)
    cohorts += field_cohorts
    if field is None:
        missing.append("no labelled field telemetry (no ground-truth labels posted for this version)")
    if not cohorts:
        missing.append("no per-cohort metrics recorded")
    return CardMetrics(registration=registration, field=field, per_cohort=cohorts)


def _field_accuracy(session: Session, version: ModelVersion) -> tuple[dict[str, Any] | None, list[CohortMetrics]]:
    """Sum ground-truth labels per device group (the cohort the fleet assigned at ingest)."""
    label, window = GroundTruthLabel, TelemetryWindowRow
    rows = session.execute(
        select(window.device_group, func.count(), func.sum(label.total), func.sum(label.correct))
        .select_from(label)
        .outerjoin(window, and_(window.device_id == label.device_id, window.window_seq == label.window_seq))
        .where(label.model_name == version.model.name, label.model_version == version.version)
        .group_by(window.device_group).order_by(window.device_group)).all()
    if not rows:
        return None, []
    cohorts = []
    all_windows = all_total = all_correct = 0
    for group, windows, total, correct in rows:
        windows, total, correct = int(windows), int(total or 0), int(correct or 0)
        all_windows, all_total, all_correct = all_windows + windows, all_total + total, all_correct + correct
        cohorts.append(CohortMetrics(
            cohort=f"device_group={group}" if group else "device_group=(none)", source="field_labels",
            metrics={"accuracy": round(correct / total, 6) if total else None, "labelled": total,
                     "windows": windows}))
    field = {"accuracy": round(all_correct / all_total, 6) if all_total else None, "labelled": all_total,
             "windows": all_windows}
    return field, cohorts


def _stated_limitations(*tag_sets: dict[str, Any]) -> list[Limitation]:
    stated: list[Limitation] = []
    for tags in tag_sets:
        value = tags.get(LIMITATIONS_TAG) if isinstance(tags, dict) else None
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        stated += [Limitation(source="stated", text=item) for item in items if isinstance(item, str) and item.strip()]
    return stated


def _alert_limitations(session: Session, version: ModelVersion) -> list[Limitation]:
    """Group the version's alerts by check, feature and cohort: each group is one derived limitation."""
    alerts = session.scalars(select(Alert).where(Alert.model_name == version.model.name,
                                                 Alert.model_version == version.version)
                             .order_by(Alert.first_seen_at).limit(MAX_ALERTS))
    groups: dict[tuple[str, str | None, str | None], list[Alert]] = {}
    for alert in alerts:
        cohort = alert.evidence.get("cohort") if isinstance(alert.evidence, dict) else None
        cohort_text = ", ".join(f"{k}={v}" for k, v in sorted(cohort.items()) if v) if isinstance(cohort, dict) \
            else None
        groups.setdefault((alert.check, alert.feature, cohort_text or None), []).append(alert)
    found = []
    for (check, feature, cohort), members in groups.items():
        still_open = sum(1 for a in members if a.resolved_at is None)
        subject = f"{check.replace('_', ' ')} on feature {feature}" if feature else check.replace("_", " ")
        where = f" in cohort {cohort}" if cohort else ""
        found.append(Limitation(source="alert", text=(
            f"{subject}{where}: {len(members)} alert(s), {still_open} open, last seen "
            f"{max(a.last_seen_at for a in members).isoformat(timespec='seconds')}"),
            evidence={"check": check, "feature": feature, "cohort": cohort, "alert_ids": [a.id for a in members],
                      "open": still_open}))
    return found


def _cohort_limitations(metrics: CardMetrics) -> list[Limitation]:
    reference = _number(metrics.registration.get("accuracy"))
    basis = "registration accuracy"
    if reference is None and metrics.field is not None:
        reference, basis = _number(metrics.field.get("accuracy")), "overall field accuracy"
    if reference is None:
        return []
    found = []
    for cohort in metrics.per_cohort:
        accuracy = _number(cohort.metrics.get("accuracy"))
        labelled = cohort.metrics.get("labelled")
        if cohort.source != "field_labels" or accuracy is None or not isinstance(labelled, int) \
                or labelled < MIN_LABELLED_PREDICTIONS or accuracy >= reference - COHORT_ACCURACY_GAP:
            continue
        found.append(Limitation(source="cohort_metrics", text=(
            f"{cohort.cohort}: field accuracy {accuracy:.3f} over {labelled} labelled predictions, "
            f"below the {basis} {reference:.3f}"),
            evidence={"cohort": cohort.cohort, "accuracy": accuracy, "reference": reference, "labelled": labelled}))
    return found

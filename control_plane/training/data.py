"""What a job learns from: the champion's registered dataset, regenerated and checked, plus labelled cohort rows.

The telemetry store keeps per-window sketches (binned feature counts) and the labels API keeps per-window
confusion counts; neither holds feature rows, so no training row can be rebuilt from them. A job therefore uses
exactly two sources: (1) the registered training dataset, regenerated from its named source and accepted only
when its fingerprint matches the registered one, and (2) labelled feature rows posted to
``POST /api/v1/training/rows`` for stored telemetry windows of the drifted cohort and window. The window labels
are used for what they can honestly give: the champion's live accuracy in that cohort and window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.errors import Invalid, NotFound
from control_plane.registry import pipeline
from control_plane.registry import service as registry
from control_plane.registry.models import Artifact, Dataset, ModelVersion
from control_plane.telemetry.models import GroundTruthLabel, TelemetryWindowRow
from control_plane.training.models import LabelledRows, TrainingJob

HOLDOUT_SHARE = 0.3  # of the labelled rows, kept out of training for the champion-vs-challenger comparison
SPLIT_SEED = 0
COHORT_KEYS = frozenset({"device_group"})


class BadData(Invalid):
    """The job's data cannot be used (missing, changed since registration, or malformed)."""


@dataclass(frozen=True)
class Plan:
    """Everything a job needs, read in one short transaction; the heavy work runs outside it."""

    champion_version_id: str
    dataset_id: str
    dataset_name: str
    dataset_fingerprint: str
    params: dict[str, Any]
    champion_artifacts: dict[str, str]  # quantization -> sha256
    windows: list[dict[str, Any]]  # labelled windows of the cohort: device_id, window_seq, group, rows
    features: list[list[list[float]]]
    labels: list[list[int]]
    live: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recent:
    """The labelled cohort rows, split into a training part and a held-out part (with each row's cohort)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    groups_holdout: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.y_train) + len(self.y_holdout)


def plan(session: Session, job: TrainingJob) -> Plan:
    """Read the champion's lineage, the cohort's labelled rows and its window labels."""
    unknown = sorted(set(job.cohort) - COHORT_KEYS)
    if unknown:
        raise BadData(f"bad data: cohort keys {unknown} are not supported (use device_group)")
    champion = registry.get_version(session=session, model_name=job.model_name, version=job.model_version)
    run = registry.get_run(session=session, run_id=champion.run_id) if champion.run_id else None
    dataset = session.get(Dataset, run.dataset_id) if run is not None and run.dataset_id else None
    if run is None or dataset is None:
        raise BadData(f"bad data: {job.model_name} v{job.model_version} has no training run with a registered "
                      "dataset, so there is no training data to extend")
    artifacts = {a.quantization: a.sha256 for a in session.scalars(
        select(Artifact).where(Artifact.model_version_id == champion.id).order_by(Artifact.created_at))}
    if not {"fp32", "int8"} & set(artifacts):
        raise BadData(f"bad data: {job.model_name} v{job.model_version} has no fp32 or int8 artifact to compare "
                      "against")
    rows = list(session.scalars(_cohort(select(LabelledRows), LabelledRows, job)
                                .order_by(LabelledRows.device_id, LabelledRows.window_seq)))
    windows, features, labels = [], [], []
    for row in rows:
        windows.append({"device_id": row.device_id, "window_seq": row.window_seq, "group": row.device_group,
                        "rows": row.rows})
        features.append(json.loads(row.features))
        labels.append(json.loads(row.labels))
    return Plan(champion_version_id=champion.id, dataset_id=dataset.id, dataset_name=dataset.name,
                dataset_fingerprint=dataset.fingerprint, params=dict(run.params), champion_artifacts=artifacts,
                windows=windows, features=features, labels=labels, live=_live_accuracy(session, job, champion))


def _cohort(query: Any, table: Any, job: TrainingJob) -> Any:
    query = query.where(table.model_name == job.model_name, table.window_start >= job.window_start.timestamp(),
                        table.window_start < job.window_end.timestamp())
    if job.cohort.get("device_group"):
        query = query.where(table.device_group == job.cohort["device_group"])
    return query


def _live_accuracy(session: Session, job: TrainingJob, champion: ModelVersion) -> dict[str, Any]:
    """The champion's accuracy in the cohort and window from the window labels (confusion counts)."""
    label, window = GroundTruthLabel, TelemetryWindowRow
    query = (select(func.count(), func.coalesce(func.sum(label.correct), 0), func.coalesce(func.sum(label.total), 0))
             .join(window, (window.device_id == label.device_id) & (window.window_seq == label.window_seq))
             .where(label.model_name == job.model_name, label.model_version == champion.version,
                    label.window_start >= job.window_start.timestamp(),
                    label.window_start < job.window_end.timestamp()))
    if job.cohort.get("device_group"):
        query = query.where(window.device_group == job.cohort["device_group"])
    windows, correct, total = session.execute(query).one()
    return {"labelled_windows": int(windows), "rows": int(total),
            "champion_accuracy": round(int(correct) / int(total), 6) if total else None}


def reference(plan: Plan) -> pipeline.TrainingData:
    """Regenerate the registered dataset and accept it only when its fingerprint is the registered one."""
    try:
        data = pipeline.load_sklearn_dataset(plan.dataset_name, seed=int(plan.params.get("seed", 0)))
    except NotFound as exc:
        raise BadData(f"bad data: dataset {plan.dataset_name!r} cannot be regenerated ({exc.message})") from exc
    if pipeline.fingerprint(data) != plan.dataset_fingerprint:
        raise BadData(f"bad data: regenerated {plan.dataset_name!r} has fingerprint {pipeline.fingerprint(data)}, "
                      f"the registered dataset {plan.dataset_id} has {plan.dataset_fingerprint}")
    return data


def recent(plan: Plan, n_features: int) -> Recent:
    """Stack the labelled rows, check their shape, and split them (seeded) into training and held-out rows."""
    xs, ys, groups = [], [], []
    for window, features, labels in zip(plan.windows, plan.features, plan.labels, strict=True):
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != n_features:
            raise BadData(f"bad data: window {window['device_id']}#{window['window_seq']} has rows of "
                          f"{x.shape[-1] if x.ndim else 0} features; the model takes {n_features}")
        xs.append(x)
        ys.append(np.asarray(labels, dtype=np.int64))
        groups += [window["group"] or ""] * len(labels)
    if not xs:
        empty = np.empty((0, n_features), dtype=np.float32)
        return Recent(empty, np.empty(0, np.int64), empty, np.empty(0, np.int64), np.empty(0, dtype=object))
    x_all, y_all, g_all = np.concatenate(xs), np.concatenate(ys), np.asarray(groups, dtype=object)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y_all))
    cut = math.ceil(len(order) * HOLDOUT_SHARE)
    held, kept = order[:cut], order[cut:]
    return Recent(x_all[kept], y_all[kept], x_all[held], y_all[held], g_all[held])

"""Build one scenario on a fresh, served control plane: models, baseline, fleet, rollouts, prompts, telemetry.

Telemetry is recorded by edge_agent's WindowRecorder and posted as each device through POST /telemetry/windows
(the real ingest path). Rollouts are written to the fleet tables as they would be after the fact (the suite has
no MQTT devices to run them), the rest goes through the API.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.auth import service as auth_service
from control_plane.auth.roles import Role
from control_plane.auth.schemas import TokenCreate
from control_plane.db.migrate import upgrade
from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline, build_baseline
from control_plane.fleet.models import Deployment, Rollout
from control_plane.main import create_app
from control_plane.mqtt.broker import free_port
from control_plane.registry.models import Artifact, ArtifactBlob, ModelVersion, RegisteredModel
from control_plane.settings import Settings
from edge_agent.telemetry import MemorySink, WindowRecorder
from evals.agent_suite.case import Case, FeatureSpec, Telemetry

ROWS_PER_WINDOW = 200
BATCHES = 10
MAX_AGE_ENV = "EDGELOOP_TELEMETRY_MAX_AGE_SECONDS"


@dataclass
class Built:
    """A served control plane holding one scenario."""

    url: str
    database: Database
    agent_token: str
    alert_ids: list[str] = field(default_factory=list)
    rollouts: dict[int, str] = field(default_factory=dict)


def _column(spec: FeatureSpec, rng: np.random.Generator, rows: int) -> np.ndarray:
    if spec.dist == "uniform":
        return rng.uniform(spec.low, spec.high, rows)
    if spec.dist == "categorical":
        return rng.integers(0, spec.k, rows).astype(np.float64)
    return rng.normal(spec.mean, spec.sd, rows)


def _inputs(case: Case, rng: np.random.Generator, rows: int) -> np.ndarray:
    return np.column_stack([_column(spec, rng, rows) for spec in case.features])


def _predict(case: Case, x: np.ndarray) -> np.ndarray:
    """A fixed toy model: is the first feature above its reference mean."""
    return (x[:, 0] > case.features[0].mean).astype(np.int64)


def _baseline(case: Case) -> Baseline:
    x = _inputs(case, np.random.default_rng(0), 5000)
    categorical = [i for i, spec in enumerate(case.features) if spec.dist == "categorical"]
    return build_baseline(x, feature_names=[f.name for f in case.features], categorical=categorical,
                          labels=_predict(case, x))


@contextmanager
def serve_case(case: Case, workdir: Path) -> Iterator[Built]:
    """Serve a fresh control plane (SQLite under ``workdir``) with the scenario built into it."""
    database_url = f"sqlite:///{workdir / 'cp.db'}"
    upgrade(database_url)
    port = free_port()
    settings = Settings(data_dir=workdir / "cp", database_url=database_url, port=port, audit_checkpoint_seconds=3600)
    database = Database(database_url)
    # Seasonal cases replay last week's windows; the default ingest refuses windows older than 7 days.
    previous_max_age = os.environ.get(MAX_AGE_ENV)
    os.environ[MAX_AGE_ENV] = str(9 * 86400)
    with database.transaction() as session:
        _, admin = auth_service.create_token(session=session, actor="admin:eval",
                                             request=TokenCreate(name="eval-admin", role=Role.ADMIN))
        _, agent = auth_service.create_token(session=session, actor="admin:eval",
                                             request=TokenCreate(name="eval-agents", role=Role.AGENT))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url + "/api/v1", timeout=60,
                          headers={"Authorization": f"Bearer {admin}"}) as http:
            built = Built(url, database, agent)
            _build(case, http, built, time.time())
            yield built
    finally:
        if previous_max_age is None:
            os.environ.pop(MAX_AGE_ENV, None)
        else:
            os.environ[MAX_AGE_ENV] = previous_max_age
        server.should_exit = True
        thread.join(15)
        database.dispose()


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = http.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


def _build(case: Case, http: httpx.Client, built: Built, now: float) -> None:
    baseline = _baseline(case)
    _call(http, "POST", "/datasets", json={"name": f"{case.model}-reference", "version": "1",
                                          "fingerprint": baseline.baseline_id.ljust(12, "0"),
                                          "baseline": baseline.to_dict()})
    _call(http, "POST", "/models", json={"name": case.model})
    for version in case.versions:
        _call(http, "POST", f"/models/{case.model}/versions", json={"version": version})
    tokens: dict[str, str] = {}
    groups: dict[str, str] = {}
    for group in case.fleet:
        for index in range(group.devices):
            device_id = f"{group.group}-{index}"
            tokens[device_id] = _call(http, "POST", "/fleet/devices", json={"id": device_id,
                                                                             "group": group.group})["token"]
            groups[device_id] = group.group
    _rollouts(case, built, now)
    for move in case.prompts:
        _call(http, "POST", "/prompts", json={"name": move.prompt})
        for text in move.versions:
            _call(http, "POST", f"/prompts/{move.prompt}/versions", json={"template": text})
        for number in range(1, len(move.versions) + 1):
            _call(http, "PUT", f"/prompts/{move.prompt}/labels/{move.label}", json={"version": number})
    for index, spec in enumerate(case.telemetry):
        _telemetry(case, spec, baseline, http, tokens, groups, now, seed=index)
    with built.database.transaction() as session:
        for alert in case.alerts:
            raised, _ = alerts.raise_alert(session=session, actor="system:monitor", request=AlertRaise(
                fingerprint=f"{case.model}-{alert.version}-{alert.check}-{alert.feature}",
                check=AlertCheck(alert.check), severity=Severity(alert.severity), title=alert.title,
                model_name=case.model, model_version=alert.version, feature=alert.feature, evidence=alert.evidence,
                rollout_id=built.rollouts.get(alert.version) if alert.rollout else None))
            built.alert_ids.append(raised.id)


def _rollouts(case: Case, built: Built, now: float) -> None:
    with built.database.transaction() as session:
        for rollout in case.rollouts:
            version_id = session.query(ModelVersion.id).join(RegisteredModel).filter(
                RegisteredModel.name == case.model, ModelVersion.version == rollout.version).scalar()
            sha = hashlib.sha256(f"{case.model}-{rollout.version}".encode()).hexdigest()
            if session.get(ArtifactBlob, sha) is None:
                session.add(ArtifactBlob(sha256=sha, size=1, created_by="eval"))
                session.flush()
            artifact = Artifact(model_version_id=version_id, sha256=sha, size=1, format="onnx", quantization="none",
                                created_by="eval")
            session.add(artifact)
            session.flush()
            deployment = Deployment(model_version_id=version_id, artifact_id=artifact.id, selector={},
                                    strategy={}, created_by="eval")
            session.add(deployment)
            session.flush()
            created = datetime.fromtimestamp(now, UTC) - timedelta(minutes=rollout.minutes_ago)
            row = Rollout(deployment_id=deployment.id, kind="deploy", state=rollout.state,
                          wave_plan=rollout.wave_plan, current_wave=rollout.current_wave, created_by="eval",
                          created_at=created)
            session.add(row)
            session.flush()
            built.rollouts[rollout.version] = row.id


def _telemetry(case: Case, spec: Telemetry, baseline: Baseline, http: httpx.Client, tokens: dict[str, str],
               groups: dict[str, str], now: float, seed: int) -> None:
    names = [f.name for f in case.features]
    devices = spec.devices or [d for d in tokens if not spec.groups or groups[d] in spec.groups]
    start, end = now + spec.minutes[0] * 60, now + spec.minutes[1] * 60
    step = (end - start) / spec.windows
    for device_number, device_id in enumerate(sorted(devices)):
        rng = np.random.default_rng(1000 * seed + device_number + 1)
        sink = MemorySink(int(start) + seed * 100_000)
        clock = [start]
        recorder = WindowRecorder(baseline.to_dict(), device_id=device_id, model_name=case.model,
                                  model_version=spec.version, sink=sink, window_seconds=max(step, 1.0),
                                  clock=lambda c=clock: c[0])  # type: ignore[misc]
        for window in range(spec.windows):
            clock[0] = start + window * step
            x = _inputs(case, rng, ROWS_PER_WINDOW)
            for column, delta in spec.shift.items():
                x[:, names.index(column)] += delta
            for column, factor in spec.scale.items():
                x[:, names.index(column)] *= factor
            errors = round(spec.error_rate * BATCHES)
            for batch_number, batch in enumerate(np.array_split(x, BATCHES)):
                recorder.observe(batch, _predict(case, batch), None, spec.latency_ms / 1000,
                                 error=batch_number < errors)
            recorder.close_window(now=min(clock[0] + step, now))
        response = http.post("/telemetry/windows", json=sink.messages,
                             headers={"Authorization": f"Bearer {tokens[device_id]}"})
        if response.status_code >= 400 or response.json()["stored"] != len(sink.messages):
            raise RuntimeError(f"telemetry of {device_id} not stored: {response.text[:300]}")

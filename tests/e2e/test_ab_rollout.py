"""End to end A/B test: control plane (SQLite and PostgreSQL) + authenticated mosquitto + real `python -m edge_agent`.

Four devices are hashed into two arms running different digits versions (a two-unit MLP against a 32-unit one);
they serve real predictions and ship real telemetry windows; the test posts delayed labels for those windows
(the ground truth of the rows it sent), the experiment reaches its fixed horizon and declares the winner, a
promotion proposal appears in the approval queue, an approver approves it and the group converges on the winner.
"""

from __future__ import annotations

import subprocess
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from control_plane.cli.context import CLI_ACTOR
from control_plane.db.session import Database
from control_plane.fleet.abtest_stats import assign
from control_plane.mqtt.broker import PrivateMosquitto, free_port
from control_plane.registry import pipeline
from control_plane.registry.store import ArtifactStore
from control_plane.settings import Settings
from tests.control_plane.fleet.conftest import wait_for
from tests.e2e.test_ota_rollout import (  # noqa: F401 - fixtures are found by name
    ControlPlane,
    _device_health,
    _predict,
    _start_agent,
    private_broker,
    serve_control_plane,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
DEVICES = ("ab-0", "ab-1", "ab-2", "ab-3")
ROWS_PER_DEVICE = 60  # 120 labelled outcomes per arm; the design needs 62


@pytest.fixture
def ab_control_plane(tmp_path: Path, private_broker: PrivateMosquitto, db_url: str  # noqa: F811
                     ) -> Iterator[tuple[ControlPlane, str]]:
    """The control plane on the test's database, with 1 s telemetry windows and a 1 s experiment evaluator."""
    with serve_control_plane(tmp_path, private_broker, db_url, experiment_evaluate_seconds=1.0,
                             fleet_telemetry_window_seconds=1.0) as served:
        yield served, db_url


def _register(tmp_path: Path, database_url: str) -> pipeline.TrainingData:
    """Register digits v1 (a two-unit MLP) and v2 (32 units), one dataset and drift baseline for both."""
    settings = Settings(data_dir=tmp_path / "cp", database_url=database_url)
    store = ArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    data = pipeline.load_sklearn_dataset("digits")
    database = Database(database_url)
    try:
        for hidden in ((2,), (32,)):
            with threadpool_limits(1), warnings.catch_warnings(), database.transaction() as session:
                warnings.simplefilter("ignore", ConvergenceWarning)
                pipeline.register_quantized_model(session=session, store=store, actor=CLI_ACTOR, model_name="digits",
                                                  data=data, estimator=pipeline.train_mlp(data, hidden=hidden),
                                                  params={"hidden": list(hidden)})
    finally:
        database.dispose()
    return data


def _salt() -> str:
    for index in range(100):
        if sorted(arm for arm, _ in assign(f"e2e-{index}", DEVICES, [0.5, 0.5]).values()) == [0, 0, 1, 1]:
            return f"e2e-{index}"
    raise AssertionError("no balanced salt")


def _serve_and_label(cp: ControlPlane, device: str, port: int, data: pipeline.TrainingData, offset: int) -> None:
    """Send rows in calls of 20, wait for their windows, then post each window's confusion counts as labels."""
    rows = np.asarray(data.x_test[offset:offset + ROWS_PER_DEVICE], dtype=np.float32)
    truth = [int(v) for v in data.y_test[offset:offset + ROWS_PER_DEVICE]]
    predicted: list[int] = []
    for start in range(0, ROWS_PER_DEVICE, 20):
        predicted += [int(v) for v in _predict(port, rows[start:start + 20].tolist())["labels"]]

    def windows() -> list[dict[str, Any]] | None:
        found = cp.call("GET", "/telemetry/windows", params={"device_id": device, "limit": 1000})
        return found if sum(w["n"] for w in found) == ROWS_PER_DEVICE else None

    labels, position = [], 0
    for window in sorted(wait_for(windows, timeout=30, interval=0.3), key=lambda w: w["window_seq"]):
        # The agent serves calls in order, so each window holds the next n rows it was sent.
        pairs = Counter(zip(predicted[position:position + window["n"]], truth[position:position + window["n"]],
                            strict=True))
        labels.append({"device_id": device, "window_seq": window["window_seq"],
                       "confusion": [[p, a, c] for (p, a), c in sorted(pairs.items())]})
        position += window["n"]
    assert cp.call("POST", "/telemetry/labels", json={"labels": labels})["stored"] == len(labels)


def test_ab_test_declares_a_winner_from_labels_and_an_approved_promotion_converges_the_group(
        ab_control_plane: tuple[ControlPlane, str], tmp_path: Path) -> None:
    cp, database_url = ab_control_plane
    data = _register(tmp_path, database_url)
    agents: list[subprocess.Popen[bytes]] = []
    ports = {device: free_port() for device in DEVICES}
    try:
        for device in DEVICES:
            provisioned = cp.call("POST", "/fleet/devices", json={"id": device, "group": "ab"})
            (tmp_path / "agents" / device).mkdir(parents=True)
            agents.append(_start_agent(provisioned, tmp_path / "agents" / device, ports[device]))
        wait_for(lambda: all(d["online"] for d in cp.call("GET", "/fleet/devices", params={"group": "ab"})),
                 timeout=40, interval=0.2)
        design = {"arms": [{"version": 1, "weight": 0.5}, {"version": 2, "weight": 0.5}], "mde": 0.2,
                  "baseline_rate": 0.7, "alpha": 0.05, "power": 0.8, "salt": _salt()}
        # Too few labels per device for the effect: refused before anything starts, with the numbers.
        refused = cp.http.post(f"{cp.url}/api/v1/fleet/deployments", headers=cp.headers["operator"], json={
            "model": "digits", "selector": {"group": "ab"},
            "strategy": {"kind": "ab", "ab": {**design, "expected_samples_per_device": 20}}})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"]["required_per_arm"] == 62
        assert cp.call("GET", "/fleet/rollouts") == []

        started = cp.call("POST", "/fleet/deployments", json={
            "model": "digits", "selector": {"group": "ab"},
            "strategy": {"kind": "ab", "ab": {**design, "expected_samples_per_device": ROWS_PER_DEVICE},
                         "wave_timeout_s": 60}})
        assert cp.wait_state(started["id"], "succeeded", "aborted", "failed", timeout=60)["state"] == "succeeded"
        experiment = cp.call("GET", f"/experiments/{started['id']}")
        arm_of = {d: arm for d, (arm, _) in assign(design["salt"], DEVICES, [0.5, 0.5]).items()}
        wait_for(lambda: all(_device_health(ports[d])["model"] == {"name": "digits", "version": arm_of[d] + 1}
                             for d in DEVICES), timeout=30, interval=0.2)

        for index, device in enumerate(DEVICES):
            _serve_and_label(cp, device, ports[device], data, index * ROWS_PER_DEVICE)
        url = f"/experiments/{experiment['id']}"
        decided = wait_for(lambda: (r := cp.call("GET", url))["state"] != "running" and r, timeout=30, interval=0.3)
        assert decided["state"] == "decided" and decided["winner"] == {"arm": 1, "version": 2}, decided
        control, treatment = decided["arms"]
        assert control["n"] >= 62 and treatment["n"] >= 62 and treatment["rate"] > control["rate"]
        assert decided["comparisons"][0]["p_value"] < 0.05 and decided["comparisons"][0]["significant"]
        # The prediction distributions, from the devices' own telemetry sketches, differ too.
        assert sum(control["predictions"].values()) == sum(treatment["predictions"].values()) == 2 * ROWS_PER_DEVICE
        assert decided["predictions"]["p_value"] is not None and decided["predictions"]["dof"] >= 1
        print(f"A/B e2e: required {decided['required_per_arm']}/arm; " + "; ".join(
            f"v{a['version']}: {a['correct']}/{a['n']} = {a['rate']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
            for a in decided["arms"]) + f"; p = {decided['comparisons'][0]['p_value']:.3g} "
            f"({decided['comparisons'][0]['method']}); predictions chi2 p = {decided['predictions']['p_value']:.3g}")

        proposal = cp.call("GET", f"/proposals/{decided['proposal_id']}")
        assert proposal["kind"] == "experiment.promote" and proposal["state"] == "pending"
        # Never silently: nothing changed on the devices until an approver decides.
        assert _device_health(ports[next(d for d in DEVICES if arm_of[d] == 0)])["model"]["version"] == 1
        cp.call("POST", f"/proposals/{proposal['id']}/approve", role="approver", json={"reason": "v2 won"})
        executed = wait_for(lambda: (p := cp.call("GET", f"/proposals/{proposal['id']}"))["state"]
                            in ("executed", "failed") and p, timeout=30, interval=0.2)
        assert executed["state"] == "executed", executed
        promotion = executed["result"]["promotion_rollout_id"]
        assert cp.wait_state(promotion, "succeeded", "aborted", "failed", timeout=90)["state"] == "succeeded"
        wait_for(lambda: all(_device_health(p)["model"] == {"name": "digits", "version": 2} for p in ports.values()),
                 timeout=30, interval=0.2)
        assert cp.call("GET", url)["state"] == "promoted"
        assert all(agent.poll() is None for agent in agents)
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(10)

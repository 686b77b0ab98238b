"""An approved retrain.request -> training job -> challenger with lineage -> comparison -> canary proposal or note."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from control_plane.audit.models import AuditEntry
from control_plane.db.session import Database
from control_plane.registry import pipeline
from tests.conftest import TokenFactory
from tests.control_plane.approvals.conftest import proposal_state
from tests.control_plane.fleet.conftest import provision, wait_for
from tests.control_plane.training.conftest import MODEL, labelled_rows, store_windows

WINDOW = {"window_start": "2020-01-01T00:00:00Z", "window_end": "2099-01-01T00:00:00Z"}


def approved_retrain(client: TestClient, make_headers: TokenFactory, incident_id: str, group: str) -> dict[str, Any]:
    """The agent proposes retraining for the drifted group, a person approves; return the executed proposal."""
    agent, approver = make_headers("agent", name="rca-bot"), make_headers("approver", name="alice")
    proposed = client.post("/api/v1/proposals", headers=agent, json={
        "action": {"kind": "retrain.request", "model": MODEL, "version": 1, **WINDOW,
                   "cohort": {"device_group": group}},
        "incident_id": incident_id, "expected_effect": "a model that handles the drifted group"})
    assert proposed.status_code == 201, proposed.text
    pid = proposed.json()["id"]
    assert client.post(f"/api/v1/proposals/{pid}/approve", headers=approver, json={"reason": "go"}).status_code == 200
    return proposal_state(client, agent, pid, "executed", "failed")


def finished_job(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/api/v1/training/jobs/{job_id}", headers=headers).json()
        return dict(body) if body["state"] in ("succeeded", "failed") else None
    return dict(wait_for(done, timeout=120, interval=0.2))


def incident(client: TestClient, headers: dict[str, str]) -> str:
    created = client.post("/api/v1/incidents", headers=headers, json={"title": "covariate drift in north"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_drifted_cohort_gets_a_challenger_that_wins_and_is_proposed_for_a_canary(
        client: TestClient, database: Database, champion: pipeline.PipelineResult, make_headers: TokenFactory) -> None:
    operator, reader = make_headers("operator", name="ops"), make_headers("viewer")
    for device in ("dev-north-0", "dev-north-1"):
        provision(client, operator, device, group="north")
    keys = store_windows(database, "north", 8)
    posted = client.post("/api/v1/training/rows", headers=operator,
                         json=labelled_rows([*keys, ("dev-unknown", 1)], drift=True))
    assert posted.status_code == 200, posted.text
    assert posted.json()["stored_rows"] == 400 and posted.json()["unknown_windows"] == [["dev-unknown", 1]]
    incident_id = incident(client, operator)

    executed = approved_retrain(client, make_headers, incident_id, "north")
    assert executed["state"] == "executed", executed
    job = finished_job(client, reader, executed["result"]["training_job_id"])

    assert job["state"] == "succeeded", job["error"]
    assert job["outcome"] == "canary_proposed" and job["challenger_version"] == 2
    decision = job["comparison"]["decision"]
    assert decision["wins"] and decision["gain_recent"] >= 0.01
    assert decision["challenger_recent"] > decision["champion_recent"]
    assert set(decision["per_cohort"]) == {"north", "reference"}
    assert decision["challenger_int8_delta_vs_fp32"] is not None
    assert all(v > 0 for v in decision["latency_p50_us"].values())
    assert job["data"]["rows"] == {"reference_train": 1347, "reference_test": 450, "recent_train": 280,
                                   "recent_holdout": 120}
    assert job["data"]["reference_dataset_id"] == champion.dataset_id
    assert {"train_s", "quantise_s", "eval_s", "total_s", "load_average_1m"} <= set(job["timings"])

    version = client.get(f"/api/v1/models/{MODEL}/versions/2", headers=reader).json()
    assert {a["quantization"] for a in version["artifacts"]} == {"fp32", "int8"}
    assert version["tags"]["training_job"] == job["id"] and version["tags"]["incident"] == incident_id
    graph = client.get(f"/api/v1/lineage/incident/{incident_id}?direction=downstream", headers=reader).json()
    edges = {(e["src"].split(":")[0], e["relation"], e["dst"].split(":")[0]) for e in graph["edges"]}
    assert {("incident", "retrained_by", "training_job"), ("training_job", "ran", "run"),
            ("run", "produced", "model_version"), ("training_job", "proposed", "proposal")} <= edges
    run = client.get(f"/api/v1/runs/{version['run_id']}", headers=reader).json()
    assert run["params"]["window_start"].startswith("2020-01-01") and run["params"]["cohort"] == {"device_group":
                                                                                                    "north"}
    upstream = client.get(f"/api/v1/lineage/run/{run['id']}?direction=upstream", headers=reader).json()
    assert f"dataset:{champion.dataset_id}" in {n["kind"] + ":" + n["id"] for n in upstream["nodes"]}

    canary = client.get(f"/api/v1/proposals/{job['proposal_id']}", headers=reader).json()
    assert canary["state"] == "pending" and canary["kind"] == "rollout.canary"  # no silent promotion
    assert canary["params"]["selector"]["group"] == "north" and canary["params"]["version"] == 2
    timeline = client.get(f"/api/v1/incidents/{incident_id}/timeline", headers=reader).json()
    notes = [e["body"] for e in timeline if e["kind"] == "comment" and e["body"].get("training_job_id")]
    assert notes and "canary proposed" in notes[-1]["summary"]

    approver = make_headers("approver", name="carol")
    assert client.post(f"/api/v1/proposals/{canary['id']}/approve", headers=approver,
                       json={"reason": "numbers look right"}).status_code == 200
    done = proposal_state(client, reader, canary["id"], "executed", "failed")
    assert done["state"] == "executed", done["error"]
    rollout = client.get(f"/api/v1/fleet/rollouts/{done['result']['rollout_id']}", headers=reader).json()
    assert rollout["progress"]["total"] == 2 and rollout["wave_plan"]
    with database.transaction(write=False) as session:
        actions = set(session.scalars(select(AuditEntry.action).where(AuditEntry.action.startswith("training"))))
    assert {"training_job.queued", "training_job.running", "training_job.succeeded", "training.rows"} <= actions


def test_a_challenger_that_misses_the_margin_is_not_proposed_and_the_incident_says_why(
        client: TestClient, database: Database, settings: Any, champion: pipeline.PipelineResult,
        make_headers: TokenFactory) -> None:
    settings.training_win_margin = 0.5  # no retrained model gains 50 points on undrifted digits
    operator, reader = make_headers("operator", name="ops"), make_headers("viewer")
    keys = store_windows(database, "south", 6)
    assert client.post("/api/v1/training/rows", headers=operator,
                       json=labelled_rows(keys, drift=False)).status_code == 200
    incident_id = incident(client, operator)
    job = finished_job(client, reader, approved_retrain(client, make_headers, incident_id, "south")["result"][
        "training_job_id"])
    assert job["state"] == "succeeded" and job["outcome"] == "challenger_not_better"
    assert job["proposal_id"] is None and job["challenger_version"] == 2
    assert "below the margin 0.5" in job["comparison"]["decision"]["reason"]
    pending = client.get("/api/v1/proposals?kind=rollout.canary", headers=reader).json()
    assert pending["total"] == 0
    timeline = client.get(f"/api/v1/incidents/{incident_id}/timeline", headers=reader).json()
    summary = [e["body"]["summary"] for e in timeline if e["body"].get("training_job_id")][-1]
    assert "not proposed" in summary and "below the margin" in summary


def test_no_new_labelled_rows_trains_nothing_and_says_so(client: TestClient, database: Database,
                                                         champion: pipeline.PipelineResult,
                                                         make_headers: TokenFactory) -> None:
    operator, reader = make_headers("operator", name="ops"), make_headers("viewer")
    incident_id = incident(client, operator)
    job = finished_job(client, reader, approved_retrain(client, make_headers, incident_id, "east")["result"][
        "training_job_id"])
    assert job["state"] == "succeeded" and job["outcome"] == "no_new_labelled_rows"
    assert job["challenger_version"] is None and "0 labelled row(s)" in job["data"]["reason"]
    assert len(client.get(f"/api/v1/models/{MODEL}/versions", headers=reader).json()) == 1
    timeline = client.get(f"/api/v1/incidents/{incident_id}/timeline", headers=reader).json()
    assert any("no challenger trained" in e["body"].get("summary", "") for e in timeline)

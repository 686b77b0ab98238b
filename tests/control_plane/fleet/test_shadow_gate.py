"""The shadow strategy on both databases: staged+shadow manifests, sketches through the ingest, the gate, the canary."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from control_plane.audit.models import AuditEntry
from control_plane.db.base import utcnow
from control_plane.fleet import rollouts
from control_plane.fleet.shadow import GATE_INTERVAL_S
from control_plane.telemetry.config import TelemetrySettings
from control_plane.telemetry.ingest import IncomingMessage, WindowIngestor
from control_plane.telemetry.models import QuarantinedMessage, ShadowWindowRow, TelemetryWindowRow
from tests.conftest import TokenFactory
from tests.control_plane.fleet.test_rollouts import Fleet, fleet  # noqa: F401 - fixture by name
from tests.control_plane.telemetry.shadow_sketches import sketch
from tests.control_plane.telemetry.simulate import ListSink, SimDevice, encode, make_baseline, register_baseline
from tests.control_plane.telemetry.simulate import register_model as register_sensor_model
from tests.control_plane.ui.conftest import sign_in_client

GATE = {"min_agreement": 0.8, "max_latency_ms": 50, "min_windows": 2}


def _windows(device_id: str, count: int) -> list[dict[str, Any]]:
    sink = ListSink()
    device = SimDevice(device_id, make_baseline(), sink, seed=len(device_id), start=time.time() - 3600)
    for _ in range(count):
        device.run_window()
    return list(sink.messages)


def _ingest(setup: Fleet, documents: list[dict[str, Any]]) -> Any:
    ingestor = WindowIngestor(TelemetrySettings())
    messages = [IncomingMessage(payload=encode(d), received_at=time.time(), device_hint=d["device_id"])
                for d in documents]
    with setup.database.transaction() as session:
        return ingestor.ingest(session, messages, now=time.time())


def _step(setup: Fleet, rollout_id: str, later_s: float = 0.0) -> None:
    with setup.database.transaction() as session:
        rollouts.step(session, setup.factory, rollout_id, utcnow() + timedelta(seconds=later_s))


def _shadow(setup: Fleet, rollout_id: str) -> dict[str, Any]:
    response = setup.client.get(f"/api/v1/fleet/rollouts/{rollout_id}/shadow", headers=setup.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_shadow_gate_passes_into_a_waved_canary_and_bad_sketches_cost_only_themselves(
        fleet: Fleet, make_headers: TokenFactory) -> None:  # noqa: F811
    register_baseline(fleet.database, make_baseline())
    register_sensor_model(fleet.database)
    first = fleet.deploy(1, ["d0", "d1"])
    for device in ("d0", "d1"):
        fleet.report(device, "activated")
    assert fleet.rollout(first["id"])["state"] == "succeeded"
    response = fleet.client.get(f"/api/v1/fleet/rollouts/{first['id']}/shadow", headers=fleet.headers)
    assert response.status_code == 422 and "not a shadow rollout" in response.text

    shadow = fleet.deploy(2, ["d0", "d1"], kind="shadow", shadow={"sample_rate": 0.5, "max_latency_ms": 20},
                          gate=GATE, then_waves=[50, 100])
    rollout_id = shadow["id"]
    assert shadow["kind"] == "shadow" and shadow["wave_plan"] == [2] and shadow["progress"]["issued"] == 2
    manifest = json.loads(base64.b64decode(json.loads(fleet.latest("d0").envelope)["payload"]))
    assert manifest["stage_only"] is True and manifest["shadow"] == {"sample_rate": 0.5, "max_latency_ms": 20}
    for device in ("d0", "d1"):
        fleet.report(device, "staged")
    assert fleet.rollout(rollout_id)["state"] == "in_progress"  # staged, but no evidence yet
    assert _shadow(fleet, rollout_id)["verdict"] == "waiting"

    good = [{**w, "shadow": sketch(rollout_id, rows=400, agree=396)} for d in ("d0", "d1") for w in _windows(d, 2)]
    bad_windows = _windows("d0", 7)[2:] + _windows("d2", 1)
    bad = [sketch(rollout_id, rows=2**64), sketch(rollout_id, candidate_labels={"0": {"deep": [1]}}),
           sketch(rollout_id, latency_buckets_ms=[1.0]), sketch(rollout_id, agree=500),
           "not a sketch"]
    documents = good + [{**w, "shadow": s} for w, s in zip(bad_windows, [*bad, sketch(rollout_id)], strict=True)]
    result = _ingest(fleet, documents)
    assert result.stored == len(documents) and result.shadow_stored == len(good)  # every window kept
    assert dict(result.shadow_quarantined) == {"shadow_out_of_range": 2, "shadow_bad_buckets": 1,
                                               "shadow_inconsistent": 1, "shadow_malformed": 1,
                                               "shadow_wrong_device": 1}  # d2 is no target of the rollout
    with fleet.database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(TelemetryWindowRow)) == len(documents)
        assert session.scalar(select(func.count()).select_from(ShadowWindowRow)) == len(good)
        reasons = set(session.scalars(select(QuarantinedMessage.reason)))
    assert "shadow_wrong_device" in reasons and "shadow_bad_buckets" in reasons
    assert _ingest(fleet, good[:1]).shadow_stored == 0  # a resent window: neither it nor its sketch twice
    nan, fine = ({**w, "shadow": sketch(rollout_id)} for w in _windows("d1", 4)[2:])
    messages = [IncomingMessage(payload=encode(nan).replace(b'"sample_rate":1.0', b'"sample_rate":NaN'),
                                received_at=time.time(), device_hint="d1"),
                IncomingMessage(payload=encode(fine), received_at=time.time(), device_hint="d1")]
    with fleet.database.transaction() as session:
        mixed = WindowIngestor(TelemetrySettings()).ingest(session, messages, now=time.time())
    # NaN is not JSON: that message is quarantined whole, with its reason; the next one is stored with its sketch.
    assert (mixed.stored, dict(mixed.quarantined), mixed.shadow_stored) == (1, {"nonfinite_count": 1}, 1)

    _step(fleet, rollout_id)
    assert fleet.rollout(rollout_id)["state"] == "in_progress"  # evaluated moments ago: the gate waits its interval
    _step(fleet, rollout_id, later_s=GATE_INTERVAL_S)
    passed = fleet.rollout(rollout_id)
    assert passed["state"] == "succeeded" and passed["reason"].startswith("shadow gate passed"), passed
    report = _shadow(fleet, rollout_id)
    (cohort,) = report["cohorts"]
    assert report["verdict"] == "pass" and cohort["cohort"] == "lab" and cohort["windows"] == 5
    assert cohort["rows"] == 1700 and cohort["agree"] == 1681 and cohort["devices"] == 2
    assert 0.8 < cohort["agreement"]["lower"] < 0.99 < cohort["agreement"]["upper"] < 1.0
    assert cohort["candidate_p95_ms"] == {"estimate": 0.5, "lower": 0.25, "upper": 0.5}  # bucket (0.25, 0.5]
    assert cohort["active_p95_ms"]["upper"] == 1.0
    patched = fleet.client.patch("/api/v1/fleet/devices/d0", json={"labels": {"site": "north"}}, headers=fleet.headers)
    assert patched.status_code == 200, patched.text
    url = f"/api/v1/fleet/rollouts/{rollout_id}/shadow"
    by_site = fleet.client.get(url, params={"by_label": "site"}, headers=fleet.headers).json()
    assert [(c["cohort"], c["windows"]) for c in by_site["cohorts"]] == [("(no site)", 3), ("site=north", 2)]
    assert by_site["verdict"] == "pass"  # the gate judges groups; the label cut is a view
    for bad in ("x" * 101, "a\u0000b"):
        assert fleet.client.get(url, params={"by_label": bad}, headers=fleet.headers).status_code == 422
    canary_id = report["canary_rollout_id"]
    canary = fleet.rollout(canary_id)
    assert canary["kind"] == "canary" and canary["wave_plan"] == [1, 2] and canary["progress"]["issued"] == 1
    manifest = json.loads(base64.b64decode(json.loads(fleet.latest("d0").envelope)["payload"]))
    assert "stage_only" not in manifest and "shadow" not in manifest and manifest["rollout_id"] == canary_id
    with fleet.database.transaction(write=False) as session:
        created = session.scalars(select(AuditEntry).where(AuditEntry.action == "rollout.create",
                                                           AuditEntry.resource_id == canary_id)).one()
    assert f'"shadow_rollout_id":"{rollout_id}"' in created.body.replace(" ", "")

    drift = fleet.client.get("/api/v1/drift/report", params={"model": "digits", "version": 2},
                             headers=fleet.headers).json()
    (summary,) = drift["shadow"]  # the drift report of the candidate version shows its shadow comparison
    assert summary["rollout_id"] == rollout_id and summary["verdict"] == "pass"
    assert summary["cohorts"][0]["agreement"] == cohort["agreement"]
    browser = sign_in_client(fleet.client, make_headers("viewer", name="ui-viewer")["Authorization"][7:])
    page = browser.get(f"/ui/fleet/rollouts/{canary_id}").text
    assert "Shadow comparison" in page and f"(phase <a href=\"/ui/fleet/rollouts/{rollout_id}\">" in page
    assert "<td>lab</td>" in page and "0.989 [0.98" in page and "0.25-0.5 ms" in page


def test_shadow_gate_fails_on_disagreement_with_the_numbers_and_starts_no_canary(fleet: Fleet) -> None:  # noqa: F811
    register_baseline(fleet.database, make_baseline())
    register_sensor_model(fleet.database)
    shadow = fleet.deploy(2, ["d0", "d1"], kind="shadow", gate=GATE)
    rollout_id = shadow["id"]
    for device in ("d0", "d1"):
        fleet.report(device, "staged")
    _ingest(fleet, [{**w, "shadow": sketch(rollout_id, rows=200, agree=100 if d == "d1" else 199)}
                    for d in ("d0", "d1") for w in _windows(d, 1)])
    _step(fleet, rollout_id, later_s=GATE_INTERVAL_S)
    failed = fleet.rollout(rollout_id)
    assert failed["state"] == "failed" and "agreement 0.748" in failed["reason"], failed
    report = _shadow(fleet, rollout_id)
    assert report["verdict"] == "fail" and report["canary_rollout_id"] is None
    assert report["cohorts"][0]["agreement"]["upper"] < 0.8


def test_a_shadow_rollout_aborted_before_the_gate_decided_says_so(fleet: Fleet) -> None:  # noqa: F811
    shadow = fleet.deploy(2, ["d0", "d1"], kind="shadow", gate=GATE)
    fleet.report("d0", "staged")
    response = fleet.client.post(f"/api/v1/fleet/rollouts/{shadow['id']}/abort", json={"reason": "not now"},
                                 headers=fleet.headers)
    assert response.status_code == 200, response.text
    report = _shadow(fleet, shadow["id"])
    assert report["verdict"] == "ended" and "aborted before the gate decided: not now" in report["reasons"][0]
    assert report["canary_rollout_id"] is None

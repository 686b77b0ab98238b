"""Every /metrics family issue 16 asks for, scraped from a real app with a real broker, read from real state."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from control_plane.approvals import service as approvals
from control_plane.approvals.execution import claim_next, execute_claimed
from control_plane.auth.roles import Role
from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.mqtt.broker import PrivateMosquitto
from control_plane.settings import Settings
from tests.control_plane.approvals.test_exactly_once import RETRAIN, _no_factory, _propose, _seed, principal
from tests.control_plane.observability.test_probes import wait_for_status

SCRAPE_TOKEN = "scrape-only-secret-456"
# Issue 16's list, in its order, and the family that answers each item.
REQUIRED = {
    "HTTP request latency histograms per route": "edgeloop_http_request_duration_seconds",
    "ingest rate (counter; rate() in PromQL)": "edgeloop_telemetry_windows_stored",
    "quarantine counts": "edgeloop_telemetry_windows_quarantined",
    "quarantine rows kept": "edgeloop_telemetry_quarantine_rows",
    "MQTT connection state": "edgeloop_mqtt_connected",
    "queue depth: telemetry inbox": "edgeloop_telemetry_inbox_depth",
    "queue depth: webhook deliveries": "edgeloop_webhook_deliveries",
    "queue depth: manifests to publish": "edgeloop_manifests_unpublished",
    "queue depth: event streams": "edgeloop_event_stream_queue_depth_max",
    "rollout states": "edgeloop_rollouts",
    "drift checks run": "edgeloop_drift_checks_run",
    "alerts": "edgeloop_alerts",
    "incidents": "edgeloop_incidents",
    "proposals by state": "edgeloop_proposals",
    "approval latency (creation -> decision)": "edgeloop_approval_latency_seconds",
    "approval latency (decision -> executed)": "edgeloop_approval_execution_latency_seconds",
    "agent runs": "edgeloop_agent_runs",
    "agent run durations": "edgeloop_agent_run_duration_seconds",
}


def test_every_required_family_is_served_from_real_state(settings: Settings, database: Database) -> None:
    _seed(database)
    proposal_id = _propose(database, RETRAIN)
    with database.transaction() as session:
        approvals.decide(session=session, proposal_id=proposal_id, approve=True, reason="go",
                         principal=principal("alice", Role.APPROVER))
    claim = claim_next(database, worker_id="test", lease_seconds=60, max_attempts=3)
    assert claim is not None and execute_claimed(database, claim, _no_factory) == "executed"

    broker = PrivateMosquitto(persistence=False).start()
    try:
        app = create_app(settings.model_copy(update={**broker.settings_overrides(), "metrics_cache_seconds": 0,
                                                     "metrics_token": SecretStr(SCRAPE_TOKEN)}))
        with TestClient(app) as client:
            wait_for_status(client, 200)  # the bridge and the telemetry consumers are connected
            stream = app.state.event_hub.subscribe()  # what an open SSE stream registers
            try:
                response = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
            finally:
                app.state.event_hub.unsubscribe(stream)
    finally:
        broker.close()
    assert response.status_code == 200, response.text
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    missing = {item: name for item, name in REQUIRED.items() if name not in families}
    assert not missing, missing

    def value(name: str, **labels: str) -> float:
        return next(s.value for s in families[name].samples if s.name == name and s.labels == labels)

    assert value("edgeloop_mqtt_connected", client="fleet-bridge") == 1
    consumers = [s.labels["client"] for s in families["edgeloop_mqtt_connected"].samples
                 if s.labels["client"].startswith("telemetry")]
    assert consumers and all(value("edgeloop_mqtt_connected", client=c) == 1 for c in consumers)
    assert value("edgeloop_event_stream_subscribers") == 1
    assert value("edgeloop_proposals", state="executed", kind="retrain.request") == 1
    assert value("edgeloop_approval_execution_latency_seconds_samples", kind="retrain.request") == 1
    assert value("edgeloop_approval_latency_seconds_samples", decision="executed") == 1
    assert any(s.labels.get("route") == "/readyz" for s in families["edgeloop_http_request_duration_seconds"].samples)

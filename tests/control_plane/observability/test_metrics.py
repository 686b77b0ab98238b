"""GET /metrics: who may scrape it, bounded labels, and the domain state it reads from the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from control_plane.alerts import service as alerts
from control_plane.alerts.schemas import AlertCheck, AlertRaise, Severity
from control_plane.auth.roles import Role
from control_plane.db.session import Database
from control_plane.main import create_app
from control_plane.observability.collectors import DatabaseCollector
from control_plane.settings import Settings
from tests.conftest import TokenFactory

SCRAPE_TOKEN = "scrape-only-secret-123"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def scrape_client(settings: Settings) -> TestClient:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(SCRAPE_TOKEN), "metrics_cache_seconds": 0}))
    with TestClient(app) as client:
        yield client  # type: ignore[misc]


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def test_metrics_need_the_scrape_token_or_a_reader(scrape_client: TestClient, make_headers: TokenFactory) -> None:
    assert scrape_client.get("/metrics").status_code == 401
    assert scrape_client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape_client.get("/metrics", headers=make_headers(Role.VIEWER)).status_code == 200
    assert scrape_client.get("/metrics", headers=make_headers(Role.DEVICE, device_id="dev-1")).status_code == 403
    # The scrape token opens /metrics only, not the API.
    assert scrape_client.get("/api/v1/models", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code == 401


def test_without_a_scrape_token_only_api_tokens_scrape(settings: Settings, make_headers: TokenFactory) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get("/metrics", headers=make_headers(Role.VIEWER)).status_code == 200


def test_requests_are_labelled_by_route_template_method_and_status_class(scrape_client: TestClient,
                                                                        make_headers: TokenFactory) -> None:
    viewer = make_headers(Role.VIEWER)
    for name in ("model-a", "model-b", "model-c"):
        assert scrape_client.get(f"/api/v1/models/{name}", headers=viewer).status_code == 404
    assert scrape_client.get("/wp-admin/secret-probe-1").status_code == 404
    assert scrape_client.request("BREW", "/healthz").status_code == 405
    assert scrape_client.get("/healthz").status_code == 200
    found = scrape(scrape_client)
    route = (("method", "GET"), ("route", "/api/v1/models/{name}"))
    assert found[("edgeloop_http_request_duration_seconds_count", route)] == 3
    assert found[("edgeloop_http_requests_total", (*route, ("status_class", "4xx")))] == 3
    assert found[("edgeloop_http_requests_total", (("method", "GET"), ("route", "unmatched"),
                                                   ("status_class", "4xx")))] == 1
    assert found[("edgeloop_http_requests_total", (("method", "OTHER"), ("route", "/healthz"),
                                                   ("status_class", "4xx")))] == 1
    # Raw paths never become labels: the series count stays bounded whatever clients send.
    labels = {value for (_, pairs) in found for _, value in pairs}
    assert not {"model-a", "/wp-admin/secret-probe-1", "BREW"} & labels


def test_domain_state_comes_from_the_database(scrape_client: TestClient, database: Database,
                                              make_headers: TokenFactory) -> None:
    with database.transaction() as session:
        alerts.raise_alert(session=session, actor="monitor:test", request=AlertRaise(
            fingerprint="f" * 64, check=AlertCheck.FEATURE_DRIFT, severity=Severity.WARNING, title="drift",
            model_name="m", model_version=1))
    agent = make_headers(Role.AGENT)
    for seconds in (1.0, 2.0, 30.0):
        response = scrape_client.post("/api/v1/agent-runs", headers=agent, json={
            "agent": "triage", "outcome": "proposed", "details": {"duration_seconds": seconds}})
        assert response.status_code == 201, response.text
    # A run whose duration is not a number is counted but cannot poison the quantiles.
    assert scrape_client.post("/api/v1/agent-runs", headers=agent, json={
        "agent": "triage", "outcome": "failed", "details": {"duration_seconds": "NaN"}}).status_code == 201
    found = scrape(scrape_client)
    assert found[("edgeloop_alerts", (("severity", "warning"), ("state", "open")))] == 1
    assert found[("edgeloop_agent_runs", (("agent", "triage"), ("outcome", "proposed")))] == 3
    assert found[("edgeloop_agent_runs", (("agent", "triage"), ("outcome", "failed")))] == 1
    assert found[("edgeloop_agent_run_duration_seconds", (("agent", "triage"), ("quantile", "0.5")))] == 2.0
    assert found[("edgeloop_agent_run_duration_seconds_samples", (("agent", "triage"),))] == 3
    assert found[("edgeloop_metrics_database_failures_total", ())] == 0
    assert ("edgeloop_manifests_unpublished", ()) in found
    assert ("edgeloop_drift_checks_run_total", (("pass", "full"),)) in found


def test_free_text_label_values_are_capped(scrape_client: TestClient, make_headers: TokenFactory) -> None:
    agent = make_headers(Role.AGENT)
    for i in range(60):
        scrape_client.post("/api/v1/agent-runs", headers=agent, json={"agent": "triage", "outcome": f"outcome-{i}"})
    outcomes = {dict(pairs)["outcome"] for (name, pairs) in scrape(scrape_client) if name == "edgeloop_agent_runs"}
    assert len(outcomes) == 51 and "other" in outcomes


def test_a_failing_database_leaves_process_metrics_and_counts_the_failure(tmp_path: Path,
                                                                          settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(SCRAPE_TOKEN),
                                                 "metrics_cache_seconds": 0}))
    with TestClient(app) as client:
        collector = next(c for c in app.state.metrics_registry._collector_to_names if isinstance(c, DatabaseCollector))
        collector.database = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'nope.db'}")
        found = scrape(client)
    assert found[("edgeloop_metrics_database_failures_total", ())] == 1
    assert ("edgeloop_alerts", ()) not in found
    assert ("edgeloop_drift_checks_run_total", (("pass", "full"),)) in found
    assert any(name == "process_cpu_seconds_total" for name, _ in found)


@pytest.mark.parametrize("weak", ["", "short"])
def test_a_weak_scrape_token_is_refused_at_start(weak: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metrics_token"):
        Settings(data_dir=tmp_path, metrics_token=weak)

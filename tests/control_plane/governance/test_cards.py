"""Model cards from a real registered model's lineage, fleet history, incident and approved rollback."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.governance.markdown import escape
from control_plane.registry import pipeline
from control_plane.registry.models import Dataset
from edge_agent.telemetry import MemorySink, WindowRecorder
from tests.conftest import TokenFactory
from tests.control_plane.governance.conftest import DEVICES, HOSTILE, MODEL, History


def _card(history: History, headers: dict[str, str], version: int) -> dict[str, Any]:
    response = history.client.get(f"/api/v1/models/{MODEL}/versions/{version}/card", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json())


def test_card_states_training_data_metrics_and_quantisation_from_lineage(
        history: History, make_headers: TokenFactory) -> None:
    card = _card(history, make_headers("viewer"), 2)
    assert card["schema"] == "edgeloop.model_card/v1" and card["model"] == MODEL and card["version"] == 2
    assert card["intended_use"] == HOSTILE  # JSON carries the stored text as is; Markdown and HTML escape it
    dataset = card["training"]["dataset"]
    assert dataset["id"] == history.v2.dataset_id and dataset["name"] == "wine"
    assert dataset["fingerprint"].startswith("sha256:") and dataset["rows"] == {"train": 133, "test": 45}
    assert len(dataset["features"]) == 13 and dataset["features"][0] == {"name": "alcohol", "dtype": "float32"}
    assert card["training"]["run_id"] == history.v2.run_id and card["training"]["code_commit"] == "abc123"
    assert card["metrics"]["registration"]["accuracy"] == pytest.approx(history.v2.accuracy_int8)
    quantisation = card["quantisation"]
    assert quantisation["fp32_bytes"] == history.v2.fp32_bytes and quantisation["int8_bytes"] == history.v2.int8_bytes
    assert quantisation["accuracy_delta"] == pytest.approx(history.v2.accuracy_delta, abs=1e-6)
    assert any("--trained--> run:" in edge for edge in card["lineage"])
    # No labels were posted and the registration stored no cohorts: said so, not invented.
    assert card["metrics"]["field"] is None and card["metrics"]["per_cohort"] == []
    assert "no per-cohort metrics recorded" in card["missing"]


def test_card_lists_deployments_the_approved_rollback_incident_and_limitations(
        history: History, make_headers: TokenFactory) -> None:
    card = _card(history, make_headers("viewer"), 2)
    assert [d["id"] for d in card["deployments"]] == [history.deploy_v2["deployment_id"]]
    assert card["deployments"][0]["created_by"] == "operator:ops" and card["deployments"][0]["audit_seq"] > 0
    by_id = {r["id"]: r for r in card["rollouts"]}
    assert by_id[history.deploy_v2["id"]]["role"] == "deployed"
    assert by_id[history.deploy_v2["id"]]["state"] == "rolled_back"
    back = by_id[history.rollback_id]
    assert back["role"] == "rolled_back" and back["targets"] == {"activated": 2}
    assert back["created_by"] == "approver:alice" and back["reason"].startswith(f"proposal {history.proposal_id}:")
    assert [i["id"] for i in card["incidents"]] == [history.incident_id]
    decision = next(d for d in card["decisions"] if d["proposal_id"] == history.proposal_id)
    assert decision["proposer"] == "agent:triage-bot" and decision["decided_by"] == "approver:alice"
    assert decision["decision_reason"] == "v2 drifts on alcohol; back to v1" and decision["state"] == "executed"
    assert [a["action"] for a in decision["audit"]] == ["proposal.create", "proposal.approved", "proposal.executing",
                                                       "proposal.executed"]
    texts = [(item["source"], item["text"]) for item in card["limitations"]]
    assert ("stated", "not validated on wines outside the training region") in texts
    drift = next(text for source, text in texts if source == "alert")
    assert drift.startswith("feature drift on feature alcohol in cohort device_group=north: 1 alert(s), 1 open")

    v1 = _card(history, make_headers("viewer"), 1)
    roles = {r["id"]: r["role"] for r in v1["rollouts"]}
    assert roles == {history.deploy_v1["id"]: "deployed", history.rollback_id: "restored"}
    assert history.proposal_id in {d["proposal_id"] for d in v1["decisions"]}  # it restored v1 too
    assert v1["incidents"] == [] and "no incidents recorded" in v1["missing"]


def test_field_accuracy_per_cohort_comes_from_posted_labels(history: History, make_headers: TokenFactory,
                                                            admin_headers: dict[str, str]) -> None:
    with history.database.transaction(write=False) as session:
        baseline = session.get(Dataset, history.v2.dataset_id).baseline  # type: ignore[union-attr]
    data = pipeline.load_sklearn_dataset("wine")
    start = time.time() - 600
    for device in DEVICES:  # real windows recorded by the edge agent's recorder, posted through the HTTP ingest
        sink = MemorySink()
        recorder = WindowRecorder(baseline, device_id=device, model_name=MODEL, model_version=2, sink=sink,
                                  clock=lambda: start)
        recorder.observe(data.x_test, data.y_test, None, 0.002, error=False)
        recorder.close_window(now=start + 60)
        ingested = history.client.post("/api/v1/telemetry/windows", json=sink.messages,
                                        headers=make_headers("device", name=device, device_id=device))
        assert ingested.status_code == 200 and ingested.json()["stored"] == 1, ingested.text
    labels = [{"device_id": "d0", "window_seq": 1, "confusion": [[0, 0, 60], [1, 0, 40]]},
              {"device_id": "d1", "window_seq": 1, "confusion": [[0, 0, 99], [1, 0, 1]]}]
    posted = history.client.post("/api/v1/telemetry/labels", json={"labels": labels}, headers=admin_headers)
    assert posted.status_code == 200 and posted.json()["stored"] == 2, posted.text
    card = _card(history, admin_headers, 2)
    assert card["metrics"]["field"] == {"accuracy": 0.795, "labelled": 200, "windows": 2}
    cohorts = {c["cohort"]: c["metrics"] for c in card["metrics"]["per_cohort"]}
    assert cohorts == {"device_group=north": {"accuracy": 0.6, "labelled": 100, "windows": 1},
                       "device_group=south": {"accuracy": 0.99, "labelled": 100, "windows": 1}}
    weak = [item for item in card["limitations"] if item["source"] == "cohort_metrics"]
    assert [item["evidence"]["cohort"] for item in weak] == ["device_group=north"]
    assert "no per-cohort metrics recorded" not in card["missing"]


def test_markdown_card_escapes_user_text(history: History, make_headers: TokenFactory) -> None:
    viewer = make_headers("viewer")
    url = f"/api/v1/models/{MODEL}/versions/2/card"
    by_query = history.client.get(url, params={"format": "markdown"}, headers=viewer)
    by_accept = history.client.get(url, headers={**viewer, "Accept": "text/markdown"})
    assert by_query.status_code == by_accept.status_code == 200
    assert by_query.headers["content-type"].startswith("text/markdown")
    text = by_query.text
    assert text.split("## Known limitations")[0] == by_accept.text.split("## Known limitations")[0]
    assert "<script>" not in text and "\n# heading" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\[click\\](javascript:alert(2)) \\*bold\\* \\| cell # heading" \
        in text
    assert "## Human decisions" in text and "approver:alice" in text and history.proposal_id.replace("_", "\\_") in text
    assert "_no per-cohort metrics recorded_" in text
    # Rendered by a CommonMark + GFM-tables renderer (markdown-it-py, which rich already depends on): the hostile
    # description is one paragraph of text, no element, link or heading of its own.
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<script" not in html and "<a " not in html and "<strong>" not in html and "<em>bold" not in html
    assert html.count("<h1>") == 1 and "<h1>heading" not in html
    assert "<p>&lt;script&gt;alert(1)&lt;/script&gt; [click](javascript:alert(2)) *bold* | cell # heading</p>" in html


@pytest.mark.parametrize(("raw", "expected"), [
    ("# title", "\\# title"),
    ("1. item", "1\\. item"),
    ("0.972", "0.972"),
    ("2026-01-31T12:00:00+00:00", "2026-01-31T12:00:00+00:00"),
    ("-0.5 and = x", "\\-0.5 and = x"),
    ("- item", "\\- item"),
    ("a|b`c`*d*_e_[f](g)", "a\\|b\\`c\\`\\*d\\*\\_e\\_\\[f\\](g)"),
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ("&lt;", "&amp;lt;"),
    ("line\n\n## two", "line ## two"),
])
def test_escape(raw: str, expected: str) -> None:
    assert escape(raw) == expected


HOSTILE_TEXTS = ["# h", "1) x", "2. y", "***", "---", "- a", "+ b", "===", "> quote", "    code", "<!-- c -->",
                 "&copy; &amp;", "\\*x\\*", "`code` ``x``", "[a]: http://x", "![i](x)", "~~~", "~~s~~", "a\\",
                 "<http://x>", "_u_ __b__", "a | b", "| a |\n|---|", "x  \ny", "<b onclick=1>b</b>", "[x][y]", "\t#"]


@pytest.mark.parametrize("raw", HOSTILE_TEXTS)
def test_escaped_text_renders_as_exactly_that_text(raw: str) -> None:
    import html

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(f"lead {escape(raw)}")
    folded = " ".join(raw.split())
    assert rendered == f"<p>lead {html.escape(folded, quote=False).replace(chr(34), '&quot;')}</p>\n"
    at_start = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(escape(raw))
    assert at_start == f"<p>{html.escape(folded, quote=False).replace(chr(34), '&quot;')}</p>\n"


def test_card_errors_and_roles(client: TestClient, make_headers: TokenFactory, history: History) -> None:
    viewer = make_headers("viewer")
    assert client.get(f"/api/v1/models/{MODEL}/versions/9/card", headers=viewer).status_code == 404
    assert client.get("/api/v1/models/nope/versions/1/card", headers=viewer).json()["error"]["message"] == \
        "model 'nope' not found"
    assert client.get(f"/api/v1/models/{MODEL}/versions/0/card", headers=viewer).status_code == 422
    assert client.get(f"/api/v1/models/{MODEL}/versions/1/card", params={"format": "pdf"},
                      headers=viewer).status_code == 422
    assert client.get(f"/api/v1/models/{MODEL}/versions/1/card").status_code == 401
    device = make_headers("device", name="dev", device_id="d0")
    assert client.get(f"/api/v1/models/{MODEL}/versions/1/card", headers=device).status_code == 403

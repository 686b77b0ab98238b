"""Prompt, eval-run and lineage pages: diffs, labels, unsupported claims marked, a clickable lineage graph."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.control_plane.evals.test_evals_api import OWNER, PORT, _post
from tests.control_plane.ui.conftest import XSS_LABEL, SignIn


def test_prompt_page_shows_versions_labels_and_the_diff(client: TestClient, sign_in: SignIn,
                                                        admin_headers: dict[str, str]) -> None:
    _post(client, "/prompts", {"name": "triage-x", "description": XSS_LABEL}, admin_headers)
    _post(client, "/prompts/triage-x/versions", {"template": "Summarise {{ alert }}.\nBe brief."}, admin_headers)
    _post(client, "/prompts/triage-x/versions", {"template": "Summarise {{ alert }}.\nCite the evidence."},
          admin_headers)
    client.put("/api/v1/prompts/triage-x/labels/staging", json={"version": 2}, headers=admin_headers)
    sign_in("viewer")
    listing = client.get("/ui/prompts")
    assert listing.status_code == 200 and "triage-x" in listing.text and "staging → v2" in listing.text
    page = client.get("/ui/prompts/triage-x")
    assert page.status_code == 200
    assert '<span class="remove">-Be brief.</span>' in page.text
    assert '<span class="add">+Cite the evidence.</span>' in page.text
    assert XSS_LABEL not in page.text and "&lt;script&gt;" in page.text
    assert client.get("/ui/prompts/no-such-prompt").status_code == 404


def test_eval_run_page_marks_unsupported_claims(client: TestClient, sign_in: SignIn,
                                                admin_headers: dict[str, str]) -> None:
    _post(client, "/eval-datasets/golden/versions", {"samples": [PORT, OWNER]}, admin_headers)
    run = _post(client, "/eval-runs", {"dataset": "golden"}, admin_headers)
    sign_in("viewer")
    page = client.get(f"/ui/evals/{run['id']}")
    assert page.status_code == 200
    marked = dict(re.findall(r'<mark class="(\w+)" title="[^"]*">([^<]+)</mark>', page.text)[::-1])
    assert marked.get("unsupported") == OWNER["answer"] and marked.get("supported") == PORT["answer"]


def test_lineage_page_draws_a_clickable_graph(client: TestClient, sign_in: SignIn,
                                              admin_headers: dict[str, str]) -> None:
    dataset = _post(client, "/datasets", {"name": "d", "version": "1", "fingerprint": "sha256:0123456789"},
                    admin_headers)
    run = _post(client, "/runs", {"name": "r", "dataset_id": dataset["id"]}, admin_headers)
    _post(client, "/models", {"name": "m"}, admin_headers)
    version = _post(client, "/models/m/versions", {"version": 1, "run_id": run["id"]}, admin_headers)
    sign_in("viewer")
    page = client.get(f"/ui/lineage/model_version/{version['id']}")
    assert page.status_code == 200, page.text[:500]
    links = re.findall(r'<a href="(/ui/lineage/[^"]+)">', page.text)
    assert f"/ui/lineage/dataset/{dataset['id']}" in links and f"/ui/lineage/run/{run['id']}" in links
    assert client.get("/ui/lineage/model_version/mv_missing").status_code == 404

"""Model card and decision pages: linked from the registry and fleet, escaped, readable by viewers, in a browser."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.conftest import TokenFactory
from tests.control_plane.governance.conftest import MODEL, History, history, trained
from tests.control_plane.ui.conftest import SignIn
from tests.control_plane.ui.test_ui_browser import sign_in

__all__ = ["history", "trained"]  # the fixtures, re-exported so pytest finds them here


def test_viewer_reads_the_card_from_the_registry_with_user_text_escaped(history: History, sign_in: SignIn) -> None:
    client = sign_in("viewer")
    registry = client.get("/ui/registry")
    assert f'href="/ui/registry/{MODEL}/versions/2/card"' in registry.text
    page = client.get(f"/ui/registry/{MODEL}/versions/2/card")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert "approver:alice" in page.text and history.rollback_id in page.text and "alcohol" in page.text
    assert "No per-cohort metrics recorded." in page.text
    assert client.get(f"/ui/registry/{MODEL}/versions/9/card").status_code == 404
    version_id = page.text.split("/ui/lineage/model_version/", 1)[1].split('"', 1)[0]
    lineage = client.get(f"/ui/lineage/model_version/{version_id}")
    link = f"/ui/registry/versions/{version_id}/card"
    assert link in lineage.text
    moved = client.get(link, follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == f"/ui/registry/{MODEL}/versions/2/card"
    assert client.get("/ui/registry/versions/mv_nope/card").status_code == 404


def test_decision_page_answers_for_a_time_and_refuses_a_bad_one(history: History, sign_in: SignIn) -> None:
    client = sign_in("viewer")
    assert 'href="/ui/fleet/devices/d0/decision"' in client.get("/ui/fleet").text
    at = history.marks["v2_active"].isoformat()
    page = client.get("/ui/fleet/devices/d0/decision", params={"at": at})
    assert page.status_code == 200 and f"{MODEL} v2" in page.text and history.deploy_v2["id"] in page.text
    now = client.get("/ui/fleet/devices/d0/decision")
    assert f"{MODEL} v1" in now.text and "approver:alice" in now.text and "proposal.approved" in now.text
    assert client.get("/ui/fleet/devices/d0/decision", params={"at": "2026-01-31T12:00:00"}).status_code == 422
    assert client.get("/ui/fleet/devices/d0/decision", params={"at": "noon"}).status_code == 422


def test_card_page_in_a_browser_under_the_csp(page: Page, live_server: str, history: History,
                                               make_headers: TokenFactory) -> None:
    sign_in(page, live_server, make_headers("viewer")["Authorization"].removeprefix("Bearer "))
    page.get_by_role("link", name="Registry").click()
    page.locator(f'a[href="/ui/registry/{MODEL}/versions/2/card"]').click()
    expect(page.get_by_role("heading", name=f"Model card: {MODEL} v2")).to_be_visible()
    # The hostile description is visible as text; the page fixture fails the test on any dialog or CSP error.
    expect(page.locator("#intended-use p.user-text")).to_contain_text("<script>alert(1)</script>")
    expect(page.locator("#decisions")).to_contain_text("approver:alice")

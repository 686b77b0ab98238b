"""The web UI in a real browser (Debian's Chromium via Playwright): sign in, act on a rollout, sign out."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.conftest import TokenFactory
from tests.control_plane.ui.conftest import XSS_LABEL


def sign_in(page: Page, base_url: str, bearer: str) -> None:
    """Sign in through the login form, as a person would."""
    page.goto(f"{base_url}/ui/fleet")
    expect(page).to_have_url(f"{base_url}/ui/login?next=%2Fui%2Ffleet")
    page.get_by_label("API token").fill(bearer)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/ui/fleet")


def test_operator_pauses_a_rollout_and_signs_out(page: Page, live_server: str, rollout: dict[str, Any],
                                                 make_headers: TokenFactory) -> None:
    bearer = make_headers("operator", name="olga")["Authorization"].removeprefix("Bearer ")
    sign_in(page, live_server, bearer)
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    # Hostile label text is shown as text; the page fixture fails the test on any dialog or CSP error.
    expect(page.get_by_text(XSS_LABEL).first).to_be_visible()

    page.get_by_role("link", name=rollout["id"]).click()
    form = page.locator("form", has=page.get_by_role("button", name="Pause"))
    form.get_by_label("Reason").fill("canary error rate climbing")
    form.get_by_role("checkbox").check()
    form.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_have_text("Done: pause.")
    expect(page.locator(".facts .state")).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("action").fill("rollout.paused")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("canary error rate climbing")).to_be_visible()
    page.get_by_role("link", name="Verify the chain").click()
    expect(page.get_by_role("status")).to_contain_text("Chain verified")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{live_server}/ui/login")
    page.goto(f"{live_server}/ui/fleet")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_htmx_loads_under_the_content_security_policy(page: Page, live_server: str,
                                                      make_headers: TokenFactory) -> None:
    sign_in(page, live_server, make_headers("viewer")["Authorization"].removeprefix("Bearer "))
    page.wait_for_function("() => window.htmx !== undefined && window.htmx.config.allowEval === false")
    assert page.evaluate("() => document.querySelectorAll('script:not([src])').length") == 0

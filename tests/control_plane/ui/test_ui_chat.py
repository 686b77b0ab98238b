"""The assistant's chat page: answers stream into the page as text, with evidence; no-script posts work too."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import TokenFactory
from tests.control_plane.ui.conftest import XSS_LABEL, csrf_of
from tests.control_plane.ui.test_ui_browser import sign_in as browser_sign_in


def test_the_chat_streams_an_answer_with_evidence(page: Page, live_server: str, make_headers: TokenFactory) -> None:
    browser_sign_in(page, live_server, make_headers("approver", name="ana")["Authorization"].removeprefix("Bearer "))
    page.get_by_role("link", name="Assistant").click()
    expect(page.get_by_role("heading", name="Ops assistant")).to_be_visible()
    page.get_by_label("Ask").fill("what is waiting for approval?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".turn.assistant .text").last
    expect(answer).to_contain_text("Templated answer", timeout=20_000)
    expect(page.locator(".turn.assistant details").first).to_be_visible()

    # Hostile text is echoed as text: the page fixture fails the test on any dialog or console error.
    page.get_by_label("Ask").fill(XSS_LABEL)
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".turn.user").last).to_have_text(XSS_LABEL)
    expect(page.locator(".turn.assistant .text").last).not_to_be_empty(timeout=20_000)
    page.reload()  # the thread keeps both questions and answers
    expect(page.locator(".turn.user")).to_have_count(2)


def test_the_chat_works_without_script_and_keeps_threads_private(live_server: str,
                                                                  make_headers: TokenFactory) -> None:
    def signed_in(role: str, name: str) -> httpx.Client:
        client = httpx.Client(base_url=live_server, timeout=30, follow_redirects=True)
        page = client.get("/ui/login")
        token = make_headers(role, name=name)["Authorization"].removeprefix("Bearer ")
        client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(page.text), "next": "/ui/chat"})
        return client

    vic, val = signed_in("viewer", "vic"), signed_in("viewer", "val")
    try:
        chat = vic.get("/ui/chat")
        assert chat.status_code == 200 and "thread=" in str(chat.url)
        action = f"/ui/chat/{str(chat.url).split('thread=')[1]}/messages"
        assert vic.post(action, data={"text": "is the audit log intact?"}).status_code == 403  # no CSRF token
        answered = vic.post(action, data={"text": "is the audit log intact?", "csrf_token": csrf_of(chat.text)})
        assert answered.status_code == 200 and "is the audit log intact?" in answered.text
        assert "Templated answer" in answered.text
        assert val.get(str(chat.url)).status_code == 404  # another user's thread does not exist for them
        empty = vic.post(action, data={"text": "  ", "csrf_token": csrf_of(chat.text)})
        assert empty.status_code == 422
    finally:
        vic.close()
        val.close()

"""UI fixtures: sign in through the real login form, and a fleet with one rollout in progress."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page

from control_plane.db.session import Database
from control_plane.fleet import service
from control_plane.fleet.schemas import DeviceCreate
from control_plane.mqtt.broker import free_port
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import FleetModels, fleet_models, register  # noqa: F401

XSS_LABEL = '<script>alert("x")</script>'
XSS_ATTRIBUTE = '" onmouseover="alert(1)'

SignIn = Callable[[str], TestClient]


def csrf_of(html: str) -> str:
    """Return the CSRF token a page's forms carry."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in_client(client: TestClient, bearer: str) -> TestClient:
    """Sign in through GET + POST /ui/login, as a browser would."""
    client.cookies.clear()
    page = client.get("/ui/login")
    assert page.status_code == 200
    response = client.post("/ui/login", data={"token": bearer, "csrf_token": csrf_of(page.text), "next": "/ui/fleet"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def sign_in(client: TestClient, make_headers: TokenFactory) -> SignIn:
    """Return a function that signs the test client in with a new token of ``role``."""

    def sign(role: str) -> TestClient:
        bearer = make_headers(role, name=f"ui-{role}")["Authorization"].removeprefix("Bearer ")
        return sign_in_client(client, bearer)

    return sign


@pytest.fixture
def rollout(client: TestClient, database: Database, operator_headers: dict[str, str],
            fleet_models: FleetModels) -> dict[str, Any]:  # noqa: F811
    """A waved rollout in progress over four devices, one of them with hostile label text."""
    register(client, operator_headers, "digits", 1, [(fleet_models.v1_int8, "int8")])
    with database.transaction() as session:
        for index in range(4):
            labels = {"site": XSS_LABEL, "note": XSS_ATTRIBUTE} if index == 0 else {"site": "lab"}
            service.provision_device(session=session, request=DeviceCreate(id=f"d{index}", group="lab", labels=labels),
                                     actor="operator:test")
    response = client.post("/api/v1/fleet/deployments", headers=operator_headers, json={
        "model": "digits", "version": 1, "selector": {"group": "lab"},
        "strategy": {"kind": "waves", "waves": [25, 50, 100]}})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """Serve the test's app on a free port with uvicorn in a thread; yield its base URL."""
    port = free_port()
    app.state.settings.assistant_api_url = f"http://127.0.0.1:{port}"  # the assistant's tools call this server
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser: Browser, live_server: str) -> Iterator[Page]:
    """A fresh browser context and page that fails the test on any script dialog, CSP violation or console error.

    It depends on the live server so that it closes first: a page left open on an event stream while the server
    stops would log the broken stream as a console error.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    opened.on("console", lambda message: problems.append(message.text)
              if "Content Security Policy" in message.text or message.type == "error" else None)
    yield opened
    context.close()
    assert problems == [], problems

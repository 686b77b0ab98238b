"""Web UI over HTTP: sessions, CSRF, role-aware rendering, escaping, and actions through the real services."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from control_plane.auth import service as auth_service
from control_plane.db.session import Database
from control_plane.ui.session import COOKIE_NAME
from tests.conftest import TokenFactory
from tests.control_plane.fleet.conftest import FleetModels, register
from tests.control_plane.fleet.test_rollouts import Fleet
from tests.control_plane.ui.conftest import XSS_ATTRIBUTE, XSS_LABEL, SignIn, csrf_of, sign_in_client


def test_pages_redirect_to_login_without_a_session(client: TestClient) -> None:
    response = client.get("/ui/fleet", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Ffleet"


def test_login_sets_a_strict_httponly_cookie_and_the_page_has_a_csp(client: TestClient, sign_in: SignIn) -> None:
    page = client.get("/ui/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    sign_in("operator")
    cookie = next(c for c in client.cookies.jar if c.name == COOKIE_NAME)
    assert cookie.path == "/ui" and cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite", "").lower() == "strict"
    fleet = client.get("/ui/fleet")
    assert fleet.status_code == 200 and "ui-operator" in fleet.text
    assert "<script>" not in fleet.text.replace('<script src="/ui/static/htmx.min.js" defer></script>', "")


def test_login_refuses_bad_tokens_devices_and_missing_csrf(client: TestClient, make_headers: TokenFactory) -> None:
    page = client.get("/ui/login")
    wrong = client.post("/ui/login", data={"token": "elp_nope_nope", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 401 and "sign-in refused" in wrong.text

    device = make_headers("device", name="dev", device_id="d9")["Authorization"].removeprefix("Bearer ")
    page = client.get("/ui/login")
    refused = client.post("/ui/login", data={"token": device, "csrf_token": csrf_of(page.text)})
    assert refused.status_code == 403 and "cannot use the web UI" in refused.text

    good = make_headers("admin")["Authorization"].removeprefix("Bearer ")
    client.cookies.clear()
    no_csrf = client.post("/ui/login", data={"token": good, "csrf_token": "guess"}, follow_redirects=False)
    assert no_csrf.status_code == 403
    assert client.get("/ui/fleet", follow_redirects=False).status_code == 303


def test_login_rotates_the_csrf_secret_and_refuses_an_open_redirect(client: TestClient,
                                                                   make_headers: TokenFactory) -> None:
    page = client.get("/ui/login?next=//evil.example/x")
    before = csrf_of(page.text)
    assert 'value="/ui/fleet"' in page.text  # the foreign target was replaced
    bearer = make_headers("viewer")["Authorization"].removeprefix("Bearer ")
    response = client.post("/ui/login", data={"token": bearer, "csrf_token": before, "next": "https://evil.example"},
                           follow_redirects=False)
    assert response.headers["location"] == "/ui/fleet"
    assert csrf_of(client.get("/ui/audit").text) != before


def test_revoking_the_token_ends_the_session(client: TestClient, database: Database,
                                             make_headers: TokenFactory) -> None:
    bearer = make_headers("approver", name="carol")["Authorization"].removeprefix("Bearer ")
    sign_in_client(client, bearer)
    assert client.get("/ui/fleet").status_code == 200
    with database.transaction() as session:
        token = next(t for t in auth_service.list_tokens(session=session) if t.name == "carol")
        auth_service.revoke_token(session=session, token_id=token.id, actor="admin:test")
    assert client.get("/ui/fleet", follow_redirects=False).status_code == 303


def test_a_forged_cookie_is_no_session(client: TestClient) -> None:
    client.cookies.set(COOKIE_NAME, "eyJ0IjoiZWxwX3hfeSIsImMiOiJ4In0.forged.sig", path="/ui")
    assert client.get("/ui/fleet", follow_redirects=False).status_code == 303


def test_logout_needs_csrf_and_ends_the_session(client: TestClient, sign_in: SignIn) -> None:
    sign_in("viewer")
    assert client.post("/ui/logout", data={}, follow_redirects=False).status_code == 403
    page = client.get("/ui/fleet")
    assert client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)},
                       follow_redirects=False).status_code == 303
    assert client.get("/ui/fleet", follow_redirects=False).status_code == 303


def test_foreign_text_is_escaped_on_every_page(client: TestClient, sign_in: SignIn, rollout: dict[str, Any],
                                               operator_headers: dict[str, str]) -> None:
    client.patch("/api/v1/models/digits", json={"description": XSS_LABEL}, headers=operator_headers)
    sign_in("admin")
    for path in ("/ui/fleet", "/ui/audit", "/ui/registry", f"/ui/fleet/rollouts/{rollout['id']}"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert XSS_LABEL not in page.text and 'onmouseover="alert' not in page.text, path
    assert "&lt;script&gt;alert(" in client.get("/ui/fleet").text
    assert XSS_ATTRIBUTE.replace('"', "&#34;") in client.get("/ui/fleet").text


def test_viewer_sees_no_actions_and_is_refused_anyway(client: TestClient, sign_in: SignIn,
                                                     rollout: dict[str, Any]) -> None:
    sign_in("viewer")
    page = client.get(f"/ui/fleet/rollouts/{rollout['id']}")
    assert "/pause" not in page.text and "/abort" not in page.text
    refused = client.post(f"/ui/fleet/rollouts/{rollout['id']}/pause",
                          data={"csrf_token": csrf_of(page.text), "reason": "x", "confirm": "yes"})
    assert refused.status_code == 403 and "lacks scope" in refused.text


def test_operator_pauses_with_a_reason_through_the_service(client: TestClient, sign_in: SignIn,
                                                           rollout: dict[str, Any],
                                                           admin_headers: dict[str, str]) -> None:
    sign_in("operator")
    url = f"/ui/fleet/rollouts/{rollout['id']}"
    page = client.get(url)
    assert "/pause" in page.text and "/rollback" not in page.text  # rollback is an approver's decision
    csrf = csrf_of(page.text)
    assert client.post(f"{url}/pause", data={"reason": "looks odd", "confirm": "yes"}).status_code == 403
    assert client.post(f"{url}/pause", data={"csrf_token": csrf, "confirm": "yes"}).status_code == 422
    assert client.post(f"{url}/pause", data={"csrf_token": csrf, "reason": "x"}).status_code == 422
    state = client.get(f"/api/v1/fleet/rollouts/{rollout['id']}", headers=admin_headers).json()["state"]
    assert state == "in_progress"

    done = client.post(f"{url}/pause", data={"csrf_token": csrf, "reason": "looks odd", "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"{url}?done=pause"
    assert client.get(f"/api/v1/fleet/rollouts/{rollout['id']}", headers=admin_headers).json()["state"] == "paused"
    entries = client.get("/api/v1/audit/entries", params={"action": "rollout.paused"}, headers=admin_headers).json()
    assert entries and entries[-1]["actor"] == "operator:ui-operator" and "looks odd" in str(entries[-1]["data"])

    again = client.post(f"{url}/pause", data={"csrf_token": csrf, "reason": "again", "confirm": "yes"})
    assert again.status_code == 409 and "<h1>409" in again.text  # a domain error renders as a page


def test_approver_rolls_back_through_the_service(client: TestClient, database: Database, sign_in: SignIn,
                                                 rollout: dict[str, Any], operator_headers: dict[str, str],
                                                 admin_headers: dict[str, str], fleet_models: FleetModels) -> None:
    # v1 reaches every device, then v2 starts: the devices v2 reached have a previous model to return to.
    fleet = Fleet(client, database, operator_headers)
    for wave in range(3):
        for device_id, state in fleet.targets(rollout["id"]).items():
            if state == "issued":
                fleet.report(device_id, "activated")
        assert wave < 2 or fleet.rollout(rollout["id"])["state"] == "succeeded"
    register(client, operator_headers, "digits", 2, [(fleet_models.v2_int8, "int8")])
    v2 = fleet.deploy(2, [f"d{i}" for i in range(4)])
    fleet.report("d1", "activated")

    sign_in("approver")
    url = f"/ui/fleet/rollouts/{v2['id']}"
    csrf = csrf_of(client.get(url).text)
    assert client.post(f"{url}/abort", data={"csrf_token": csrf, "reason": "bad canary", "confirm": "yes"},
                       follow_redirects=False).status_code == 303
    assert "/rollback" in client.get(url).text
    done = client.post(f"{url}/rollback", data={"csrf_token": csrf, "reason": "restore v1", "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303, done.text
    rollback_id = done.headers["location"].split("/")[-1].split("?")[0]
    body = client.get(f"/api/v1/fleet/rollouts/{rollback_id}", headers=admin_headers).json()
    assert body["kind"] == "rollback" and body["rollback_of"] == v2["id"] and body["model"]["version"] == 1
    assert "restore v1" in client.get(f"/ui/fleet/rollouts/{rollback_id}").text


def test_a_live_rollout_page_refreshes_its_progress(client: TestClient, sign_in: SignIn,
                                                   rollout: dict[str, Any]) -> None:
    sign_in("viewer")
    page = client.get(f"/ui/fleet/rollouts/{rollout['id']}")
    assert f'hx-get="/ui/fleet/rollouts/{rollout["id"]}/progress"' in page.text and "sse-connect" in page.text
    fragment = client.get(f"/ui/fleet/rollouts/{rollout['id']}/progress")
    assert fragment.status_code == 200 and "<html" not in fragment.text and "d0" in fragment.text

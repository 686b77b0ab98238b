"""The A/B test page: arms, required n, the decision; linked from its rollout; CSP and no inline script."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.control_plane.fleet.test_abtest_api import _ab, _salt
from tests.control_plane.fleet.test_rollouts import Fleet, fleet  # noqa: F401 - fixture by name
from tests.control_plane.ui.conftest import SignIn


def test_experiment_page_shows_arms_required_n_and_no_winner_before_the_horizon(
        client: TestClient, sign_in: SignIn, fleet: Fleet) -> None:  # noqa: F811
    response = _ab(fleet, salt=_salt())
    assert response.status_code == 201, response.text
    rollout_id = response.json()["id"]
    sign_in("viewer")
    rollout_page = client.get(f"/ui/fleet/rollouts/{rollout_id}")
    assert rollout_page.status_code == 200 and "/ui/fleet/experiments/exp_" in rollout_page.text
    page = client.get(f"/ui/fleet/experiments/{rollout_id}")
    assert page.status_code == 200, page.text
    assert "script-src 'self'" in page.headers["content-security-policy"] and "<script>" not in page.text
    text = page.text
    assert "v1" in text and "v2" in text and "(control)" in text and "0 / 62" in text
    assert "no winner" in text and "horizon not reached" in text
    assert client.get("/ui/fleet/experiments/exp_missing").status_code == 404
    assert client.get("/ui/fleet/experiments/bad%20id").status_code in (404, 422)

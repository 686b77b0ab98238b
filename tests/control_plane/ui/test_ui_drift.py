"""The drift page renders its heatmap, histograms and tests from real ingested telemetry."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from control_plane.db.session import Database
from control_plane.drift.baseline import Baseline
from tests.conftest import TokenFactory
from tests.control_plane.drift.test_monitor import feed
from tests.control_plane.telemetry.conftest import baseline, dataset_id  # noqa: F401  (fixtures)
from tests.control_plane.ui.conftest import SignIn
from tests.control_plane.ui.test_ui_browser import sign_in as browser_sign_in


def drifted_telemetry(database: Database, reference: Baseline) -> None:
    """Calm windows 90 minutes ago, then windows 45 minutes ago in which temperature (feature 0) shifted by 6.

    Both sit well inside the page's two one-hour buckets that end now, whatever second the page is rendered.
    """
    now = float(int(time.time()))  # not the NOW fixed at collection: a long suite reaches this test much later
    feed(database, reference, now - 5400, count=10)
    feed(database, reference, now - 2700, count=10, first_seq=100, shift={0: 6.0})


def test_drift_page_draws_the_shift(client: TestClient, database: Database, sign_in: SignIn,
                                    baseline: Baseline, dataset_id: str) -> None:  # noqa: F811
    drifted_telemetry(database, baseline)
    sign_in("viewer")
    page = client.get("/ui/drift", params={"hours": 2, "buckets": 2})
    assert page.status_code == 200, page.text
    assert "sensor-clf" in page.text and "100 windows from 5 devices" in page.text
    # Heatmap: one cell per feature and bucket; temperature is a major shift in the second bucket only.
    cells = re.findall(r"<title>temperature, bucket (\d): PSI ([0-9.]+) \((\w+)\)", page.text)
    assert [(bucket, band) for bucket, _, band in cells] == [("1", "stable"), ("2", "major")]
    assert "share of values per bin for temperature" in page.text
    row = re.search(r'<tr class="drifted">\s*<td>temperature</td>', page.text)
    assert row, "temperature is not listed as drifted"

    empty = client.get("/ui/drift", params={"model": "no-such-model", "version": 1})
    assert empty.status_code == 200 and "No telemetry windows for no-such-model v1" in empty.text


def test_drift_page_in_the_browser(page: Page, live_server: str, database: Database, make_headers: TokenFactory,
                                   baseline: Baseline, dataset_id: str) -> None:  # noqa: F811
    drifted_telemetry(database, baseline)
    browser_sign_in(page, live_server, make_headers("viewer")["Authorization"].removeprefix("Bearer "))
    page.get_by_role("link", name="Drift").click()
    page.get_by_label("hours").fill("2")
    page.get_by_label("buckets").fill("2")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="PSI per feature over time")).to_be_visible()
    heatmap = page.locator("svg.chart").first
    expect(heatmap).to_be_visible()
    assert heatmap.locator("rect").count() >= 2 * 5
    assert page.locator("svg.chart").count() >= 2  # the heatmap and at least one histogram

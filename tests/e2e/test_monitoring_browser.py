"""The monitoring page in a real browser: a product manager narrows the
charts to one version and one segment with the filter form, and the charts
and the per-version table follow. Screenshots go to /tmp/metrics-shots/."""

from pathlib import Path

import pytest

from tests.monitoring.conftest import versions  # noqa: F401
from tests.monitoring.test_monitoring_page import logged  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/metrics-shots")


def test_a_product_manager_filters_the_charts(logged, page, live_server, login):  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    project = logged.project
    login(logged.users["product_manager"])
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.get_by_role("link", name="Monitoring").first.click()
    page.wait_for_url(f"**/projects/{project.pk}/monitoring/")
    charts = page.locator("[data-testid=charts] svg")
    assert charts.count() == 5
    assert page.locator("[data-testid=version-summary] tbody tr").count() == 2

    page.select_option("#f-version", "2")
    page.select_option("#f-segment", "country=DE")
    page.select_option("#f-granularity", "hour")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/monitoring/?version=2&segment=country%3DDE&granularity=hour")
    # The table's heading names the period and the segment it reads.
    period = page.inner_text("[data-testid=period]")
    assert period.startswith("· last 7 days, ") and period.endswith(" UTC · country=DE")
    # v2 served the 15 odd requests, all from DE, one an hour: 15 bars.
    assert page.locator("[data-testid=charts] svg").first.locator("rect").count() == 15
    page.screenshot(path=str(SHOTS / "browser-filtered.png"), full_page=True)
    page.get_by_role("link", name="Clear").click()
    page.wait_for_url(f"**/projects/{project.pk}/monitoring/")
    assert page.locator("#f-version").input_value() == ""

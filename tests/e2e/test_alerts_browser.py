"""Drift alerts in a real browser: a data scientist reads the open alerts of
a shifted day, acknowledges one with a note and sees it move to the
acknowledged list; a bad threshold on the settings page is refused with the
field named. Screenshots go to /tmp/drift-shots/."""

from pathlib import Path

import pytest

from monitoring.models import Alert
from monitoring.services.drift import drift_check
from tests.monitoring.drift_data import (
    WINDOW_END,
    WINDOW_START,
    add_logs,
    drift_project,  # noqa: F401
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/drift-shots")


def test_a_data_scientist_acknowledges_an_alert(
    drift_project,  # noqa: F811
    team,
    page,
    live_server,
    login,
):
    SHOTS.mkdir(parents=True, exist_ok=True)
    project, version = drift_project
    add_logs(project, version, shifted=True, truth=100)
    drift_check(project=project, window_start=WINDOW_START, window_end=WINDOW_END)
    count = Alert.objects.filter(project=project).count()
    login(team.users["data_scientist"])
    page.goto(f"{live_server.url}/projects/{project.pk}/monitoring/alerts/")
    open_rows = page.locator("[data-testid=open-alerts] tbody tr")
    assert open_rows.count() == count
    page.screenshot(path=str(SHOTS / "alerts-open.png"), full_page=True)
    row = open_rows.filter(has_text="amount: population stability index")
    row.locator("textarea").fill("Prices went up in March; <b>retrain</b> planned.")
    row.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(f"**/projects/{project.pk}/monitoring/alerts/")
    assert page.locator("[data-testid=open-alerts] tbody tr").count() == count - 1
    acknowledged = page.locator("[data-testid=acknowledged-alerts] tbody tr")
    assert acknowledged.count() == 1
    assert "<b>retrain</b> planned" in acknowledged.inner_text()  # shown as text, not markup
    assert "by data_scientist" in acknowledged.inner_text()
    page.screenshot(path=str(SHOTS / "alerts-acknowledged.png"), full_page=True)

    page.goto(f"{live_server.url}/projects/{project.pk}/monitoring/settings/")
    page.screenshot(path=str(SHOTS / "settings.png"), full_page=True)
    page.fill("input[name=psi_threshold]", "-2")
    page.get_by_role("button", name="Save").click()
    assert "-2 is out of range for the population stability index" in page.inner_text("main")
    assert "psi_threshold" not in page.inner_text("main")
    page.screenshot(path=str(SHOTS / "settings-error.png"), full_page=True)

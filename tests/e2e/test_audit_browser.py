"""The audit log stays within the window, whatever the recorded values."""

import pytest

from leanml_site.models import AuditEvent
from leanml_site.roles import Role
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 800])
def test_long_audit_values_wrap_and_the_page_fits_the_window(page, live_server, login, width):
    project = ProjectFactory(name="Reviews")
    owner = UserFactory(username="owner")
    MembershipFactory(project=project, user=owner, role=Role.OWNER)
    AuditEvent.objects.create(
        project=project,
        actor=owner,
        action="monitoring_settings.update",
        target_type="monitoring.monitoringsettings",
        target_id="1",
        before={"psi_threshold": 0.25, "oov_increase": 0.1, "centroid_distance": 0.2},
        after={"psi_threshold": 0.0001, "surfacing_mix": {"random": 0.2, "uncertainty": 0.8}},
    )
    unbroken = "x" * 200_000  # one "word" the browser cannot break at a space
    AuditEvent.objects.create(
        project=project,
        actor=owner,
        action="sample.revise",
        target_type="labelling.sample",
        target_id="7",
        after={"data": {"text": unbroken}, "note": "y" * 300},
    )
    page.set_viewport_size({"width": width, "height": 860})
    login(owner)

    page.goto(f"{live_server.url}/projects/{project.pk}/audit/")

    fits = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(fits), page.evaluate("document.documentElement.scrollWidth")
    after = page.locator("table.audit tbody tr").last.locator("td").nth(5)
    assert after.locator("dt").all_inner_texts() == ["psi_threshold", "surfacing_mix"]
    box = after.bounding_box()
    assert box["x"] + box["width"] <= width
    # The long value is shortened; opening it shows all of it, still within the window.
    details = page.locator("table.audit details").first
    assert len(details.locator("summary").inner_text()) <= 120
    details.locator("summary").click()
    assert details.locator("pre").inner_text() == '{"text": "' + unbroken + '"}'
    assert page.evaluate(fits)

"""An iteration in a real browser: a data scientist opens it and retrains, the
progress bar moves while a real Celery worker trains, the regression report
appears, and a product manager approves it.

The training runs in a separate ``celery worker`` process (see
tests/iterations/test_training_worker.py for how it reaches the test database
and a private queue). Its text sub-model is the "held" TF-IDF, which waits in
its fit until the test removes a file: the test can then see the bar stand at
the fitting step before the training finishes, instead of hoping to catch a
two-second job in the act.
"""

import time
from pathlib import Path

import pytest

from iterations.models import Decision, EnsembleConfig, Iteration, RegressionReport, TrainingJob
from leanml_site.roles import Role
from tests.factories import LabelClassFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.iterations.conftest import FIELDS, add_samples, review_rows

# Fixtures shared with the worker tests: a private queue, a media dir, the
# held sub-model, and the worker processes.
from tests.iterations.test_training_worker import held, media, queue, workers  # noqa: F401

from .conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/demo-shots")
BAR = "#training .progress[role=progressbar]"


@pytest.fixture
def shots():
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture
def food(db, held, tmp_path):  # noqa: F811 (the imported fixture)
    """200 real labelled reviews, a data scientist and a product manager, and
    an ensemble whose text sub-model holds its fit while ``hold`` exists."""
    project = ProjectFactory(name="Fine food", fields=FIELDS, holdout_fraction=0.2)
    classes = {
        "great": LabelClassFactory(project=project, name="great", order=0),
        "other": LabelClassFactory(project=project, name="other", order=1),
    }
    add_samples(project, classes, review_rows(200))
    hold = tmp_path / "hold"
    hold.touch()
    EnsembleConfig.objects.create(
        project=project,
        number=1,
        submodels=[
            {
                "key": "text",
                "name": held.NAME,
                "fields": ["review"],
                "params": {"hold_file": str(hold)},
            },
            {
                "key": "fields",
                "name": "hist_gbm",
                "fields": ["product"],
                "params": {"max_iter": 20, "min_samples_leaf": 5},
            },
        ],
    )
    scientist = UserFactory(username="dana")
    pm = UserFactory(username="priya")
    MembershipFactory(project=project, user=scientist, role=Role.DATA_SCIENTIST)
    MembershipFactory(project=project, user=pm, role=Role.PRODUCT_MANAGER)
    return project, scientist, pm, hold


def sign_in(page, live_server, user):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user.get_username())
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def watch_bar(page, seconds, until, explain=lambda: ""):
    """The bar's values, read from the page every 0.1 s until ``until(values)``;
    on failure, ``explain()`` (the workers' logs) says what happened meanwhile."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = page.evaluate(
            f"() => document.querySelector('{BAR}')?.getAttribute('aria-valuenow') ?? null"
        )
        if value is not None and (not values or values[-1] != int(value)):
            values.append(int(value))
        if until(values):
            return values
        page.wait_for_timeout(100)
    pytest.fail(f"the progress bar showed {values} in {seconds} s\n{explain()}")


def test_a_scientist_retrains_watches_progress_and_a_pm_approves_the_report(
    food,
    live_server,
    browser,
    page,
    workers,  # noqa: F811
    shots,
):
    project, scientist, pm, hold = food
    sign_in(page, live_server, scientist)

    # Open an iteration through its form.
    page.goto(f"{live_server.url}/projects/{project.pk}/iterations/new/")
    page.fill("input[name=title]", "Rules for stale snacks")
    page.fill(
        "textarea[name=hypothesis]",
        "Reviews that call the snack stale are never great; the model should learn it.",
    )
    page.click("button:has-text('Open iteration')")
    page.wait_for_selector("button:has-text('Retrain')")
    iteration = Iteration.objects.get(project=project)
    assert page.url.split("#")[0].endswith(f"/iterations/{iteration.pk}/")

    # Retrain: with no worker running yet the job waits in the queue at 0%.
    page.click("button:has-text('Retrain')")
    page.wait_for_selector(BAR)
    assert page.get_attribute(BAR, "aria-valuenow") == "0"
    assert "Waiting for a worker" in page.inner_text("#training")
    page.screenshot(path=str(shots / "iteration-1-queued.png"), full_page=True)

    # A worker starts; the page, polling, shows the bar moving up to the fit.
    workers.start()
    values = watch_bar(page, 120, until=lambda v: v and v[-1] >= 30, explain=workers.logs)
    assert values[0] == 0 and values[-1] == 30, values
    assert values == sorted(values), values
    assert "Fitting" in page.inner_text("#training")
    job = TrainingJob.objects.get(version__iteration=iteration)
    assert (job.state, round(job.progress * 100)) == (TrainingJob.State.RUNNING, 30)
    page.screenshot(path=str(shots / "iteration-2-training.png"), full_page=True)

    assert "no regression report yet" in page.inner_text("#report")

    # The fit goes on; the report follows the training on the same page.
    hold.unlink()
    page.wait_for_selector("#report h3:has-text('Gates')", timeout=120_000)
    job.refresh_from_db()
    assert job.state == TrainingJob.State.SUCCEEDED, workers.logs()
    report = RegressionReport.objects.get(candidate=job.version)
    assert f"Report {report.content_hash[:12]}" in page.inner_text("#report")
    assert page.query_selector(BAR) is None
    assert "Candidate" in page.inner_text("#training")
    page.screenshot(path=str(shots / "iteration-3-report.png"), full_page=True)
    # A data scientist may not decide.
    assert page.query_selector("#signoff form") is None

    # The product manager signs off in a browser of their own.
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    pm_page = context.new_page()
    try:
        sign_in(pm_page, live_server, pm)
        pm_page.goto(f"{live_server.url}/projects/{project.pk}/iterations/{iteration.pk}/")
        signoff = pm_page.inner_text("#signoff")
        assert f"report {report.content_hash[:12]}" in signoff
        pm_page.check("#signoff input[name=verdict][value=approve]")
        pm_page.fill(
            "#signoff textarea[name=comment]", "Better than nothing in production; ship it."
        )
        pm_page.click("#signoff button:has-text('Record decision')")
        pm_page.wait_for_selector("#signoff table")
        row = pm_page.inner_text("#signoff table tbody tr")
        # The confirmation is where the eye lands after the redirect, not above it.
        confirmation = pm_page.locator(".messages", has_text="approved on report")
        assert confirmation.is_visible() and confirmation.bounding_box()["y"] >= 0
        assert pm_page.evaluate("window.scrollY") == 0
        pm_page.screenshot(path=str(shots / "iteration-4-approved.png"), full_page=True)
    finally:
        context.close()

    for text in ("priya", "Approve", f"v{job.version.number}", report.content_hash[:12]):
        assert text in row, row
    assert "Better than nothing in production" in row
    decision = Decision.objects.get(iteration=iteration)
    assert (decision.by, decision.verdict, decision.report_hash) == (
        pm,
        "approve",
        report.content_hash,
    )
    iteration.refresh_from_db()
    assert iteration.status == Iteration.Status.APPROVED

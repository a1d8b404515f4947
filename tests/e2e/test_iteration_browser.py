"""A data scientist retrains from the iteration page, watches the progress
bar move, the report appears without a reload, and a product manager
approves it, in a real browser."""

import threading
import time
from unittest import mock

import pytest
from django.db import connection

from iterations.models import Decision, EnsembleConfig, ModelSettings, ModelVersion
from iterations.services import training
from iterations.services.regression import regression_run
from iterations.services.training import training_request, training_run
from iterations.tasks import regression_run_task, training_run_task
from leanml_site.roles import Role
from tests.factories import LabelClassFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.iterations.conftest import FIELDS, add_samples, review_rows

from .conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEP_SECONDS = 0.6  # each training step is held this long so a 1 s poll sees it


@pytest.fixture
def media(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def project(db, media):
    """200 labelled reviews, a small ensemble, and version 1 in production."""
    project = ProjectFactory(name="Fine food", fields=FIELDS, holdout_fraction=0.2)
    classes = {
        "great": LabelClassFactory(project=project, name="great", order=0),
        "other": LabelClassFactory(project=project, name="other", order=1),
    }
    add_samples(project, classes, review_rows(200))
    EnsembleConfig.objects.create(
        project=project,
        number=1,
        submodels=[
            {"key": "text", "name": "tfidf_logreg", "fields": ["review"], "params": {}},
            {
                "key": "fields",
                "name": "hist_gbm",
                "fields": ["product"],
                "params": {"max_iter": 20, "min_samples_leaf": 5},
            },
        ],
    )
    ModelSettings.objects.create(
        project=project,
        gain_matrix={
            "great": {"great": 1.0, "other": -0.5},
            "other": {"great": -4.0, "other": 0.5},
        },
        useful_baseline=10.0,
    )
    users = {}
    for name, role in (("dana", Role.DATA_SCIENTIST), ("pat", Role.PRODUCT_MANAGER)):
        users[name] = UserFactory(username=name)
        MembershipFactory(project=project, user=users[name], role=role)
    job = training_request(project=project, by=users["dana"], queue=False)
    assert training_run(job_id=job.pk).state == "succeeded"
    ModelVersion.objects.filter(pk=job.version_id).update(status="production")
    regression_run(version_id=job.version_id)
    # The experts relabel some samples: the retrain has something to learn.
    moved = list(project.samples.filter(consensus_label=classes["other"])[:25])
    project.samples.filter(pk__in=[s.pk for s in moved]).update(consensus_label=classes["great"])
    return project, users


def worker(job_id):
    """What the Celery worker does, in a thread of the test process."""
    try:
        time.sleep(STEP_SECONDS)  # the page first shows the job queued
        training_run(job_id=job_id)
    finally:
        connection.close()


def test_a_retrain_is_watched_reported_and_approved(
    project, page, login, live_server, browser, screenshot_dir
):
    project, users = project
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    slow_step = training._Log.step

    def step(self, fraction, message):
        time.sleep(STEP_SECONDS)
        slow_step(self, fraction, message)

    threads = []

    def start(job_id):
        thread = threading.Thread(target=worker, args=(job_id,))
        threads.append(thread)
        thread.start()
        return mock.Mock(id=f"thread-{job_id}")

    with (
        mock.patch.object(training._Log, "step", step),
        mock.patch.object(training_run_task, "delay", side_effect=start),
        # The test that follows training runs in the worker's thread, as its own task would.
        mock.patch.object(
            regression_run_task,
            "delay",
            side_effect=lambda version_id, by_id=None: regression_run(version_id=version_id),
        ),
    ):
        login(users["dana"])
        page.goto(f"{live_server.url}/projects/{project.pk}/iterations/new/")
        page.fill("#id_title", "Relabelled delivery complaints")
        page.fill("#id_hypothesis", "Delivery complaints about good food are great, not other.")
        page.click("button:has-text('Open iteration')")
        page.wait_for_selector("h1:has-text('Relabelled delivery complaints')")
        detail = page.url.split("#")[0]
        page.uncheck("input[name=refit][value=fields]")  # reuse the boosting model
        page.click("button:has-text('Retrain')")

        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            bar = page.locator("[role=progressbar]")
            if bar.count():
                seen.append(int(bar.first.get_attribute("aria-valuenow")))
                if len(set(seen)) == 3:
                    page.screenshot(path=str(screenshot_dir / "iteration-progress.png"))
            if page.locator("#report table").count():
                break
            page.wait_for_timeout(150)
        for thread in threads:
            thread.join(timeout=30)

    # The bar moved, and the report came in by itself (no reload by the test).
    assert len(set(seen)) >= 2 and seen == sorted(seen), seen
    assert page.locator("#report table").count() > 0
    assert page.locator("#report svg").count() >= 4
    assert "Version 2" in page.inner_text("#training")
    page.screenshot(path=str(screenshot_dir / "iteration-report.png"), full_page=True)

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pm = context.new_page()
    pm.goto(f"{live_server.url}/login/")
    pm.fill("input[name=username]", "pat")
    pm.fill("input[name=password]", PASSWORD)
    pm.click("button[type=submit]")
    pm.wait_for_url(lambda url: "/login/" not in url)
    pm.goto(detail)
    shown_hash = pm.get_attribute("input[name=report_hash]", "value")
    pm.check("input[name=verdict][value=approve]")
    pm.fill("textarea[name=comment]", "Recall of great is up; approve.")
    pm.click("button:has-text('Record decision')")
    pm.wait_for_selector("#signoff table")
    assert "Recall of great is up; approve." in pm.inner_text("#signoff")
    context.close()

    decision = Decision.objects.get()
    assert decision.report_hash == shown_hash and decision.version.number == 2
    assert decision.version.status == "approved" and decision.by == users["pat"]
    assert not errors, errors

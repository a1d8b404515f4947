"""Iteration pages: backlog, new iteration, detail (data diff, retrains and
their progress, the report), sign-off, abandon."""

from html import unescape
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse
from kombu.exceptions import OperationalError

from iterations.models import (
    Artifact,
    DatasetSnapshot,
    Decision,
    EnsembleConfig,
    Iteration,
    ModelVersion,
    SnapshotRow,
    TrainingJob,
)
from iterations.services.iterations import iteration_create
from iterations.tasks import training_run_task
from leanml_site.models import AuditEvent
from tests.factories import SampleFactory

from .report_payload import make_report

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


# --- helpers ---------------------------------------------------------------------------


def url(name, team, *args):
    return reverse(f"iterations:{name}", args=[team.project.pk, *args])


def open_iteration(team, title="Delivery complaints", **kwargs):
    return iteration_create(
        project=team.project,
        by=team.users["data_scientist"],
        title=title,
        hypothesis=kwargs.pop("hypothesis", "Reviews about late delivery are mislabelled."),
        **kwargs,
    )


def snapshot(team, rows, content="a"):
    """A snapshot of (sample, revision, label class) rows."""
    snap = DatasetSnapshot.objects.create(
        project=team.project, content_hash=content * 64, row_count=len(rows)
    )
    SnapshotRow.objects.bulk_create(
        SnapshotRow(snapshot=snap, sample=s, revision=rev, label=label, split=s.split)
        for s, rev, label in rows
    )
    return snap


def config(team):
    return EnsembleConfig.objects.get_or_create(
        project=team.project,
        number=1,
        defaults={
            "submodels": [
                {"key": "text", "name": "tfidf_logreg", "fields": ["text"], "params": {}},
                {"key": "rules", "name": "keyword_rules", "fields": ["text"], "params": {}},
            ]
        },
    )[0]


def version(team, number, status, snap, iteration=None, job_state=None, **job):
    v = ModelVersion.objects.create(
        project=team.project,
        number=number,
        status=status,
        snapshot=snap,
        ensemble=config(team),
        iteration=iteration,
        created_by=team.users["data_scientist"],
    )
    if job_state:
        TrainingJob.objects.create(
            project=team.project,
            version=v,
            state=job_state,
            refit=["text"],
            requested_by=team.users["data_scientist"],
            **job,
        )
    return v


@pytest.fixture
def world(team):
    """Production v1 trained on 4 samples; the iteration's candidate v2 on
    data where one label was added, one changed, one sample left, one corrected."""
    great, other = team.classes
    s = [SampleFactory(project=team.project, external_id=f"r{i}") for i in range(5)]
    old = snapshot(team, [(s[0], 1, great), (s[1], 1, other), (s[2], 1, great), (s[3], 1, other)])
    new = snapshot(
        team,
        [(s[0], 1, great), (s[1], 1, great), (s[3], 2, other), (s[4], 1, great)],
        content="b",
    )
    production = version(team, 1, "production", old, job_state="succeeded")
    iteration = open_iteration(team)
    candidate = version(team, 2, "candidate", new, iteration, job_state="succeeded", log="Fitted")
    Iteration.objects.filter(pk=iteration.pk).update(candidate=candidate, status="ready")
    iteration.refresh_from_db()
    return {
        "iteration": iteration,
        "production": production,
        "candidate": candidate,
        "samples": s,
        "snapshots": (old, new),
    }


def ready(team, world, **kwargs):
    return make_report(
        project=team.project,
        candidate=world["candidate"],
        production=world["production"],
        samples=world["samples"],
        **kwargs,
    )


def anonymous_redirects(response):
    return response.status_code == 302 and response["Location"].startswith(reverse("login"))


# --- list ------------------------------------------------------------------------------


def test_list_shows_every_iteration_with_its_gates_gain_and_effort(team, world):
    ready(team, world)
    open_iteration(team, title="Second idea", expected_gain="+5 EUR / 1,000", effort="2 days")
    for role in ("expert", "data_scientist", "product_manager", "owner"):
        response = team.client(role).get(url("iteration_list", team))
        assert response.status_code == 200
        body = response.content.decode()
        assert "Delivery complaints" in body and "Second idea" in body
        assert "+5 EUR / 1,000" in body and "2 days" in body
        assert "Ready for sign-off" in body and "v2" in body
        assert ("New iteration" in body) == (role in ("data_scientist", "owner"))
    assert "2 open now" in body


def test_list_says_whether_the_gates_passed(team, world):
    report = ready(team, world)
    body = team.client("expert").get(url("iteration_list", team)).content.decode()
    assert ('class="pill ok">passed' in body) == report.passed
    assert ('class="pill bad">failed' in body) == (not report.passed)


def test_list_hides_the_project_from_outsiders_and_anonymous(team):
    assert team.client(team.outsider).get(url("iteration_list", team)).status_code == 404
    assert anonymous_redirects(Client().get(url("iteration_list", team)))


def test_list_rejects_post(team):
    assert team.client("owner").post(url("iteration_list", team)).status_code == 405


def test_list_escapes_hostile_titles(team):
    open_iteration(team, title=HOSTILE, hypothesis=HOSTILE)
    body = team.client("expert").get(url("iteration_list", team)).content.decode()
    assert HOSTILE not in body and "<script>alert" not in body
    assert "&lt;script&gt;" in body


# --- create ----------------------------------------------------------------------------


def test_a_data_scientist_opens_an_iteration(team):
    response = team.client("data_scientist").post(
        url("iteration_create", team),
        {"title": " Short reviews ", "hypothesis": "Short ones are noise.", "effort": "S"},
    )
    iteration = Iteration.objects.get(project=team.project)
    assert response.status_code == 302
    assert response["Location"] == url("iteration_detail", team, iteration.pk)
    assert (iteration.title, iteration.status, iteration.effort) == ("Short reviews", "open", "S")
    assert iteration.opened_by == team.users["data_scientist"]
    assert AuditEvent.objects.filter(action="iteration.open", target_id=str(iteration.pk)).exists()


def test_create_shows_errors_next_to_the_field_and_creates_nothing(team):
    response = team.client("owner").post(
        url("iteration_create", team), {"title": "x", "hypothesis": "   "}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="id_hypothesis-error"' in body
    assert "Write the hypothesis" in body or "This field is required" in body
    assert not Iteration.objects.exists()


@pytest.mark.parametrize("role", ["expert", "product_manager"])
def test_create_requires_train_role(team, role):
    client = team.client(role)
    assert client.get(url("iteration_create", team)).status_code == 403
    assert (
        client.post(url("iteration_create", team), {"title": "t", "hypothesis": "h"}).status_code
        == 403
    )
    assert not Iteration.objects.exists()


def test_create_hides_the_project_from_outsiders(team):
    response = team.client(team.outsider).post(url("iteration_create", team), {"title": "t"})
    assert response.status_code == 404
    assert anonymous_redirects(Client().get(url("iteration_create", team)))


# --- detail: data diff, attempts -------------------------------------------------------


def test_detail_shows_the_hypothesis_and_no_candidate_yet(team):
    iteration = open_iteration(team, expected_gain="+3 points recall", effort="1 day")
    body = team.client("expert").get(url("iteration_detail", team, iteration.pk)).content.decode()
    assert "Reviews about late delivery are mislabelled." in body
    assert "+3 points recall" in body and "1 day" in body
    assert "No candidate yet" in body
    assert "No version trained for this iteration yet." in body
    assert "Retrain" not in body  # the expert may not train


def test_detail_shows_the_data_diff_per_class(team, world):
    body = (
        team.client("product_manager")
        .get(url("iteration_detail", team, world["iteration"].pk))
        .content.decode()
    )
    # r1 other→great, r2 (great) left, r3 corrected, r4 great added.
    assert "1 labels added, 1 changed, 1 samples excluded or removed, 1 corrected" in body
    rows = {
        label: [c.strip() for c in row.split("</td>")[:8]]
        for label, row in (
            (cls.name, body.split(f'<th scope="row">{cls.name}</th>', 1)[1].split("</tr>")[0])
            for cls in team.classes
        )
    }
    cells = {k: [unescape(c.replace("<td>", "")) for c in v] for k, v in rows.items()}
    #          old, new, change, added, relabelled in, out, removed, corrected
    assert cells["great"][:8] == ["2", "3", "+1", "1", "1", "0", "1", "0"]
    assert cells["other"][:8] == ["2", "1", "-1", "0", "0", "1", "0", "1"]
    r1 = world["samples"][1]
    assert reverse("labelling:sample_detail", args=[team.project.pk, r1.pk]) in body


def test_the_data_diff_is_worked_out_once_per_pair_of_snapshots(team, world):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from iterations.selectors import iteration_data_diff

    first = iteration_data_diff(iteration=world["iteration"])
    with CaptureQueriesContext(connection) as queries:
        again = iteration_data_diff(iteration=world["iteration"])
    assert not [q for q in queries.captured_queries if "snapshotrow" in q["sql"].lower()]
    assert (again.per_class, again.totals, again.examples) == (
        first.per_class,
        first.totals,
        first.examples,
    )
    assert again.totals["relabelled"] == 1


def test_detail_says_plainly_when_there_is_no_production_model(team, world):
    ModelVersion.objects.filter(pk=world["production"].pk).update(status="retired")
    body = (
        team.client("expert")
        .get(url("iteration_detail", team, world["iteration"].pk))
        .content.decode()
    )
    assert "There was no production model to compare version" in body


def test_detail_lists_attempts_newest_first_with_the_error_for_trainers_only(team, world):
    snap = world["snapshots"][1]
    version(
        team,
        3,
        "failed",
        snap,
        world["iteration"],
        job_state="failed",
        message="too few labels of other",
        error="Traceback (most recent call last): SECRET_FRAME",
    )
    page = url("iteration_detail", team, world["iteration"].pk)
    ds = team.client("data_scientist").get(page).content.decode()
    assert ds.index("Version 3") < ds.index("Version 2")
    assert "too few labels of other" in ds and "SECRET_FRAME" in ds
    pm = team.client("product_manager").get(page).content.decode()
    assert "too few labels of other" in pm and "SECRET_FRAME" not in pm


def test_detail_is_404_for_another_projects_iteration(team):
    iteration = Iteration.objects.create(
        project=team.other_project, title="theirs", hypothesis="h", opened_by=team.outsider
    )
    response = team.client("owner").get(url("iteration_detail", team, iteration.pk))
    assert response.status_code == 404


# --- retrain, progress, cancel ---------------------------------------------------------


@pytest.fixture
def trainable(team, world):
    """The project's samples labelled, so a training request can snapshot them."""
    great, other = team.classes
    for i, s in enumerate(world["samples"]):
        s.consensus_label = great if i % 2 else other
        s.consensus_state = "agreed"
        s.save()
    # Production's fitted sub-models, which a retrain may reuse.
    for key in ("text", "rules"):
        Artifact.objects.create(
            version=world["production"], key=key, file=f"a/{key}", sha256="0" * 64, size_bytes=1
        )
    return world


def test_a_data_scientist_retrains_the_chosen_sub_models(
    team, trainable, django_capture_on_commit_callbacks
):
    iteration = trainable["iteration"]
    with (
        mock.patch.object(training_run_task, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        delay.return_value.id = "task-9"
        client = team.client("data_scientist")
        response = client.post(url("iteration_retrain", team, iteration.pk), {"refit": ["rules"]})
    assert response.status_code == 302
    job = TrainingJob.objects.get(version__number=3)
    delay.assert_called_once_with(job.pk)
    assert job.refit == ["rules"] and job.state == "queued"
    iteration.refresh_from_db()
    assert (iteration.status, iteration.candidate) == ("training", job.version)
    assert job.version.iteration == iteration
    body = client.get(response["Location"]).content.decode()
    assert "Version 3 queued for training." in body
    assert 'role="progressbar"' in body and 'hx-trigger="every 1s"' in body


@pytest.mark.django_db(transaction=True)
def test_retrain_when_the_broker_is_down_shows_the_failed_job(team, trainable):
    # Transactional: the job is queued on commit, inside the request, as in production.
    iteration = trainable["iteration"]
    client = team.client("owner")
    with mock.patch.object(training_run_task, "delay", side_effect=OperationalError("refused")):
        response = client.post(url("iteration_retrain", team, iteration.pk), {})
    job = TrainingJob.objects.get(version__number=3)
    assert job.state == "failed" and "unreachable" in job.message
    iteration.refresh_from_db()
    assert iteration.status == "open"
    body = client.get(response["Location"]).content.decode()
    assert "Version 3 could not start: the task queue is unreachable" in body
    assert 'hx-trigger="every' not in body  # nothing left to poll


def test_retrain_refuses_unknown_sub_models_with_a_message(team, trainable):
    iteration = trainable["iteration"]
    response = team.client("owner").post(
        url("iteration_retrain", team, iteration.pk), {"refit": ["nope"]}, follow=True
    )
    assert "nope" in response.content.decode() and "not one of the available choices" in unescape(
        response.content.decode()
    )
    assert not ModelVersion.objects.filter(number=3).exists()


def test_retrain_of_a_decided_iteration_says_why(team, trainable):
    iteration = trainable["iteration"]
    Iteration.objects.filter(pk=iteration.pk).update(status="abandoned")
    response = team.client("owner").post(
        url("iteration_retrain", team, iteration.pk), {"refit": ["text"]}, follow=True
    )
    assert "open a new iteration to train again" in response.content.decode()
    assert not ModelVersion.objects.filter(number=3).exists()


@pytest.mark.parametrize("role", ["expert", "product_manager"])
def test_retrain_requires_train_role(team, trainable, role):
    response = team.client(role).post(url("iteration_retrain", team, trainable["iteration"].pk))
    assert response.status_code == 403
    assert not ModelVersion.objects.filter(number=3).exists()


def test_retrain_rejects_get(team, world):
    response = team.client("owner").get(url("iteration_retrain", team, world["iteration"].pk))
    assert response.status_code == 405


def running_job(team, world, **job):
    Iteration.objects.filter(pk=world["iteration"].pk).update(status="training")
    v = version(
        team, 3, "training", world["snapshots"][1], world["iteration"], job_state="running", **job
    )
    Iteration.objects.filter(pk=world["iteration"].pk).update(candidate=v)
    return v.job


def test_progress_partial_polls_while_running_and_asks_for_a_reload_when_done(team, world):
    job = running_job(team, world, progress=0.42, message="Fitting text")
    progress = url("job_progress", team, world["iteration"].pk, job.pk)
    client = team.client("expert")
    response = client.get(progress, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200 and "HX-Refresh" not in response
    assert 'aria-valuenow="42"' in body and "Fitting text" in body and "every 1s" in body
    assert "<html" not in body  # a partial, not a page
    # Without JavaScript the whole page reloads itself while there is something to watch.
    page = client.get(url("iteration_detail", team, world["iteration"].pk)).content.decode()
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page
    TrainingJob.objects.filter(pk=job.pk).update(state="failed", message="boom")
    page = client.get(url("iteration_detail", team, world["iteration"].pk)).content.decode()
    assert "http-equiv" not in page and "boom" in page
    response = client.get(progress, HTTP_HX_REQUEST="true")
    assert response["HX-Refresh"] == "true"
    assert "hx-trigger" not in response.content.decode() and "boom" in response.content.decode()


def test_progress_keeps_polling_for_the_report_after_training(team, world):
    from django.utils import timezone

    job = running_job(team, world)
    TrainingJob.objects.filter(pk=job.pk).update(state="succeeded", finished_at=timezone.now())
    progress = url("job_progress", team, world["iteration"].pk, job.pk)
    response = team.client("expert").get(progress, HTTP_HX_REQUEST="true")
    assert "HX-Refresh" not in response and "every 2s" in response.content.decode()
    assert "the regression test runs next" in response.content.decode()


def test_progress_of_another_iterations_job_is_404(team, world):
    job = running_job(team, world)
    other = open_iteration(team, title="Other")
    response = team.client("owner").get(url("job_progress", team, other.pk, job.pk))
    assert response.status_code == 404


def test_a_data_scientist_cancels_a_queued_job(team, world):
    job = running_job(team, world)
    TrainingJob.objects.filter(pk=job.pk).update(state="queued")
    response = team.client("data_scientist").post(
        url("job_cancel", team, world["iteration"].pk, job.pk)
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == "cancelled" and job.cancel_requested
    world["iteration"].refresh_from_db()
    assert world["iteration"].status == "open"


def test_cancel_requires_train_role(team, world):
    job = running_job(team, world)
    response = team.client("product_manager").post(
        url("job_cancel", team, world["iteration"].pk, job.pk)
    )
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.state == "running" and not job.cancel_requested


# --- the report ------------------------------------------------------------------------


def test_detail_renders_the_report_tables_and_charts(team, world):
    gain = {"great": {"great": 2.0, "other": -1.0}, "other": {"great": -3.0, "other": 1.0}}
    report = ready(team, world, gain_matrix=gain, baseline=100.0)
    body = (
        team.client("expert")
        .get(url("iteration_detail", team, world["iteration"].pk))
        .content.decode()
    )
    payload = report.payload
    assert report.content_hash[:12] in body
    for v in payload["versions"]:
        assert f"{v['metrics']['accuracy'] * 100:.1f}%" in body
        assert f"{v['value_per_1000']:,.2f}" in body
    for g in payload["gates"]["results"]:
        assert unescape(g["sentence"]) in unescape(body)
    assert "McNemar" in body and "Paired bootstrap, 200 resamples" in body
    assert body.count("<svg") == 5  # recall deltas, 2 confusion, calibration, value
    assert "<title>Per-class recall change" in body
    assert "Slice: product" in body
    fixed = payload["comparison"]["flips"]["fixed"]
    assert f"Fixed: {payload['comparison']['flips']['fixed_count']}" in body
    first = fixed[0]
    assert reverse("labelling:sample_detail", args=[team.project.pk, first["sample_id"]]) in body


def test_report_without_production_says_so(team, world):
    ModelVersion.objects.filter(pk=world["production"].pk).update(status="retired")
    make_report(project=team.project, candidate=world["candidate"])
    body = (
        team.client("expert")
        .get(url("iteration_detail", team, world["iteration"].pk))
        .content.decode()
    )
    assert "There is no production model: the candidate's numbers stand alone" in body
    assert "Flipped samples" not in body


def test_report_says_which_version_could_not_be_rescored_and_that_no_value_is_set(team, world):
    from .report_payload import build_payload

    earlier = version(team, 3, "rejected", world["snapshots"][0])
    payload = build_payload(
        classes=["great", "other"],
        candidate=world["candidate"],
        production=world["production"],
        earlier=[earlier],
    )
    payload["versions"][2].update(
        metrics=None,
        slices=None,
        value_per_1000=None,
        error="artifact text of version 3 failed its sha256 check",
    )
    make_report(project=team.project, candidate=world["candidate"], payload=payload)
    body = team.client("expert").get(url("iteration_detail", team, world["iteration"].pk))
    body = body.content.decode()
    assert "Not re-scored: artifact text of version 3 failed its sha256 check" in body
    assert "No gain matrix is set" in body and "Value / 1,000" not in body
    assert body.count("<svg") == 4  # no value chart without a gain matrix


def test_report_escapes_hostile_class_names_and_sample_ids(team, world):
    great, other = team.classes
    great.name = HOSTILE
    great.save()
    s = world["samples"][0]
    s.external_id = HOSTILE
    s.save()
    report = ready(team, world)
    assert HOSTILE in str(report.payload)
    body = (
        team.client("expert")
        .get(url("iteration_detail", team, world["iteration"].pk))
        .content.decode()
    )
    assert HOSTILE not in body and "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;" in body
    svg = body[body.index("<svg") : body.rindex("</svg>")]
    assert "<script" not in svg and "&lt;script&gt;" in svg


# --- sign-off --------------------------------------------------------------------------


def test_a_product_manager_approves_on_the_report_shown(team, world):
    report = ready(team, world)
    page = url("iteration_detail", team, world["iteration"].pk)
    client = team.client("product_manager")
    body = client.get(page).content.decode()
    assert f'value="{report.content_hash}"' in body and "Record decision" in body
    response = client.post(
        url("iteration_decide", team, world["iteration"].pk),
        {"verdict": "approve", "comment": "Good gain.", "report_hash": report.content_hash},
    )
    assert response.status_code == 302
    assert "Version 2 approved on report" in client.get(page).content.decode()
    decision = Decision.objects.get()
    assert (decision.version, decision.report, decision.report_hash) == (
        world["candidate"],
        report,
        report.content_hash,
    )
    assert decision.by == team.users["product_manager"]
    world["candidate"].refresh_from_db()
    world["iteration"].refresh_from_db()
    assert world["candidate"].status == "approved" and world["iteration"].status == "approved"
    audit = AuditEvent.objects.get(action="iteration.approve")
    assert audit.after["report"] == report.content_hash and audit.after["version"] == 2
    body = client.get(page).content.decode()
    assert (
        "Good gain." in body and report.content_hash[:12] in body and "Record decision" not in body
    )


def test_reject_without_a_comment_shows_the_error_next_to_it_and_writes_nothing(team, world):
    report = ready(team, world)
    response = team.client("owner").post(
        url("iteration_decide", team, world["iteration"].pk),
        {"verdict": "reject", "comment": " ", "report_hash": report.content_hash},
    )
    assert response.status_code == 400
    body = response.content.decode()
    comment_block = body.split('for="id_comment"', 1)[1].split("</div>", 2)
    assert "Say why you reject the candidate." in "".join(comment_block[:2])
    assert not Decision.objects.exists()
    world["iteration"].refresh_from_db()
    assert world["iteration"].status == "ready"


def test_a_stale_report_hash_is_refused(team, world):
    old = ready(team, world)
    new = ready(team, world, seed=1)
    assert old.content_hash != new.content_hash
    response = team.client("product_manager").post(
        url("iteration_decide", team, world["iteration"].pk),
        {"verdict": "approve", "comment": "ok", "report_hash": old.content_hash},
    )
    assert response.status_code == 400
    assert "The regression report changed since you opened the page" in unescape(
        response.content.decode()
    )
    # The page shows the new report and its form carries the new hash.
    assert f'name="report_hash" value="{new.content_hash}"' in response.content.decode()
    assert not Decision.objects.exists()


def test_approving_past_a_failed_gate_needs_a_comment(team, world):
    from ml.gates import GateConfig

    # The candidate is made worse than production, so the accuracy gate fails.
    report = ready(team, world, accuracies=(0.6, 0.9), gates=GateConfig(value_margin=None))
    assert not report.passed
    client = team.client("product_manager")
    page = client.get(url("iteration_detail", team, world["iteration"].pk)).content.decode()
    assert "on which a gate failed" in page and 'class="pill bad">fail' in page
    response = client.post(
        url("iteration_decide", team, world["iteration"].pk),
        {"verdict": "approve", "comment": "", "report_hash": report.content_hash},
    )
    assert response.status_code == 400
    assert "explain in the comment why you approve anyway" in response.content.decode()
    assert not Decision.objects.exists()


@pytest.mark.parametrize("role", ["expert", "data_scientist"])
def test_decide_requires_decide_role(team, world, role):
    report = ready(team, world)
    client = team.client(role)
    page = client.get(url("iteration_detail", team, world["iteration"].pk)).content.decode()
    assert "Record decision" not in page
    response = client.post(
        url("iteration_decide", team, world["iteration"].pk),
        {"verdict": "approve", "comment": "x", "report_hash": report.content_hash},
    )
    assert response.status_code == 403
    assert not Decision.objects.exists()


def test_decide_rejects_get(team, world):
    response = team.client("owner").get(url("iteration_decide", team, world["iteration"].pk))
    assert response.status_code == 405


def test_decide_hides_the_project_from_outsiders(team, world):
    response = team.client(team.outsider).post(
        url("iteration_decide", team, world["iteration"].pk), {"verdict": "approve"}
    )
    assert response.status_code == 404
    assert anonymous_redirects(
        Client().post(url("iteration_decide", team, world["iteration"].pk), {})
    )


# --- abandon ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["data_scientist", "product_manager", "owner"])
def test_trainers_and_deciders_abandon(team, world, role):
    response = team.client(role).post(
        url("iteration_abandon", team, world["iteration"].pk), {"comment": "Not worth it"}
    )
    assert response.status_code == 302
    world["iteration"].refresh_from_db()
    assert world["iteration"].status == "abandoned"
    event = AuditEvent.objects.filter(action="iteration.status").latest("pk")
    assert event.after == {"status": "abandoned", "comment": "Not worth it"}
    assert event.actor == team.users[role]


def test_abandon_requires_train_or_decide_role(team, world):
    response = team.client("expert").post(url("iteration_abandon", team, world["iteration"].pk))
    assert response.status_code == 403
    world["iteration"].refresh_from_db()
    assert world["iteration"].status == "ready"


def test_a_decided_iteration_cannot_be_abandoned(team, world):
    Iteration.objects.filter(pk=world["iteration"].pk).update(status="approved")
    response = team.client("owner").post(
        url("iteration_abandon", team, world["iteration"].pk), follow=True
    )
    assert "A decided iteration stays as it was decided." in response.content.decode()
    world["iteration"].refresh_from_db()
    assert world["iteration"].status == "approved"


# --- with the real report writer -------------------------------------------------------


def test_a_real_regression_report_renders_and_is_signed_off(reviews, media):
    """Two iterations through real training and the real regression test:
    the second one's page shows the report the writer stored, and a product
    manager approves it on that report's hash."""
    from iterations.models import ModelSettings
    from iterations.services.iterations import iteration_decide, iteration_retrain
    from iterations.services.regression import regression_run
    from iterations.services.training import training_run
    from tests.factories import MembershipFactory, UserFactory

    project, ds = reviews.project, reviews.user
    MembershipFactory(project=project, user=ds, role="data_scientist")
    pm = UserFactory(username="pm")
    MembershipFactory(project=project, user=pm, role="product_manager")
    ModelSettings.objects.create(
        project=project,
        gain_matrix={
            "great": {"great": 1.0, "other": -0.5},
            "other": {"great": -4.0, "other": 0.5},
        },
        useful_baseline=50.0,
        slice_fields=["product"],
    )

    def through(title, **retrain):
        iteration = iteration_create(project=project, by=ds, title=title, hypothesis="h")
        job = iteration_retrain(iteration=iteration, by=ds, queue=False, **retrain)
        assert training_run(job_id=job.pk).state == "succeeded"
        report = regression_run(version_id=job.version_id)
        iteration.refresh_from_db()
        assert iteration.status == "ready"
        return iteration, report

    first, first_report = through("First model")
    iteration_decide(iteration=first, by=pm, verdict="approve", comment="start")
    ModelVersion.objects.filter(pk=first.candidate_id).update(status="production")
    # The experts relabel 30 samples: the second model learns something else.
    from labelling.models import Sample

    moved = Sample.objects.filter(project=project, consensus_label=reviews.classes["other"])[:30]
    Sample.objects.filter(pk__in=[s.pk for s in moved]).update(
        consensus_label=reviews.classes["great"]
    )
    second, report = through("Only the text", refit=["text"])

    client = Client()
    client.force_login(pm)
    page = reverse("iterations:iteration_detail", args=[project.pk, second.pk])
    body = client.get(page).content.decode()
    payload = report.payload
    assert payload["comparison"]["against"] == 1
    assert report.content_hash[:12] in body and f'value="{report.content_hash}"' in body
    for v in payload["versions"]:
        assert f"{v['metrics']['accuracy'] * 100:.1f}%" in body
    for gate in payload["gates"]["results"]:
        assert unescape(gate["sentence"]) in unescape(body)
    mcnemar = payload["comparison"]["mcnemar"]
    assert mcnemar["b"] + mcnemar["c"] > 0
    assert f"gets {mcnemar['c']} samples right that production got wrong" in body
    assert "McNemar's exact test" in unescape(body) and "Slice: product" in body
    assert "30 changed" in body  # the data diff against production's snapshot
    assert body.count("<svg") == 5
    for flip in payload["comparison"]["flips"]["fixed"][:3]:
        assert reverse("labelling:sample_detail", args=[project.pk, flip["sample_id"]]) in body
    response = client.post(
        reverse("iterations:iteration_decide", args=[project.pk, second.pk]),
        {
            "verdict": "approve",
            "comment": "text only is enough",
            "report_hash": report.content_hash,
        },
    )
    assert response.status_code == 302
    decision = Decision.objects.get(iteration=second)
    assert (decision.report, decision.version_id) == (report, second.candidate_id)


def test_a_data_scientist_reruns_the_regression_test(team, world):
    from iterations.tasks import regression_run_task

    client = team.client("data_scientist")
    page = client.get(url("iteration_detail", team, world["iteration"].pk)).content.decode()
    assert "Re-run regression test" in page
    with mock.patch.object(regression_run_task, "delay") as delay:
        response = client.post(url("iteration_rerun", team, world["iteration"].pk))
    delay.assert_called_once_with(world["candidate"].pk, team.users["data_scientist"].pk)
    assert response["Location"].endswith("#report")
    body = client.get(response["Location"]).content.decode()
    assert "Regression test of version 2 queued" in body
    assert AuditEvent.objects.filter(action="regression.request").exists()


def test_rerun_with_the_broker_down_says_so(team, world):
    from iterations.tasks import regression_run_task

    client = team.client("owner")
    with mock.patch.object(regression_run_task, "delay", side_effect=OperationalError("refused")):
        response = client.post(url("iteration_rerun", team, world["iteration"].pk), follow=True)
    assert "The task queue is unreachable" in response.content.decode()
    assert not AuditEvent.objects.filter(action="regression.request").exists()


def test_rerun_requires_train_role(team, world):
    from iterations.tasks import regression_run_task

    page = team.client("product_manager").get(url("iteration_detail", team, world["iteration"].pk))
    assert "Re-run regression test" not in page.content.decode()
    with mock.patch.object(regression_run_task, "delay") as delay:
        response = team.client("product_manager").post(
            url("iteration_rerun", team, world["iteration"].pk)
        )
    assert response.status_code == 403 and not delay.called


def test_the_project_nav_leads_to_iterations_and_rules_and_they_to_model_settings(team):
    body = team.client("expert").get(f"/projects/{team.project.pk}/").content.decode()
    for url in ("iterations/", "rules/"):
        assert f'href="/projects/{team.project.pk}/{url}"' in body
    listing = team.client("expert").get(f"/projects/{team.project.pk}/iterations/")
    assert f'href="/projects/{team.project.pk}/model-settings/"' in listing.content.decode()


def test_a_promoted_candidate_is_not_diffed_against_itself(team):
    great, _ = team.classes

    snap = snapshot(team, [(SampleFactory(project=team.project), 1, great)])
    iteration = open_iteration(team)
    first = version(team, 1, "production", snap, iteration)
    Iteration.objects.filter(pk=iteration.pk).update(candidate=first, status="approved")
    body = (
        team.client("product_manager")
        .get(f"/projects/{team.project.pk}/iterations/{iteration.pk}/")
        .content.decode()
    )
    assert "There was no production model to compare version 1 with" in body
    assert "exactly the data of production" not in body

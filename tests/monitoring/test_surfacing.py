# ruff: noqa: F811 (pytest fixtures imported from surfacing_fixtures)
"""Surfacing runs on real reviews: a trained production model, its logged
predictions, end-user corrections; what lands in the labelling queue, and why."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from labelling.models import QueueItem, Sample
from labelling.services.cleaning import sample_flag
from labelling.services.queue import queue_add
from leanml_site.models import AuditEvent
from ml.hashing import content_hash, split_for
from ml.surfacing import DEFAULT_MIX
from monitoring.models import MonitoringSettings, PredictionLog, SurfacedSample, SurfacingRun
from monitoring.services.surfacing import (
    SurfacingError,
    surfacing_due,
    surfacing_request,
    surfacing_run,
)
from monitoring.tasks import surfacing_run_task
from tests.iterations.conftest import add_samples

from .surfacing_fixtures import correct, crew, media, production, reviews  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=False)


def run(project, by, **kwargs):
    request = surfacing_request(project=project, by=by, queue=False, **kwargs)
    return surfacing_run(run_id=request.pk)


def test_budget_and_mix_are_spent_with_reasons(production):
    p = production
    # Three confident predictions an end user corrected: feedback's share of 20 is 2.
    confident = sorted(p.logs, key=lambda log: -log.confidence)[:3]
    for log in confident:
        other = "other" if log.predicted == "great" else "great"
        correct(p.project, log, other)
    mix = {**DEFAULT_MIX, "feedback": 0.1}
    done = run(p.project, p.crew.users["data_scientist"], budget=20, mix=mix)
    assert done.state == SurfacingRun.State.SUCCEEDED, done.message
    assert done.candidates == 300
    # The default's 0.6 / 0.15 / 0.05 / 0.1 and feedback 0.1, of 20.
    assert done.counts == {
        "uncertainty": 12,
        "disagreement": 3,
        "feedback": 2,
        "novelty": 1,
        "random": 2,
    }
    surfaced = list(SurfacedSample.objects.filter(run=done).select_related("sample"))
    assert len(surfaced) == 20
    items = {i.sample_id: i for i in QueueItem.objects.filter(project=p.project)}
    for row in surfaced:
        log = PredictionLog.objects.get(pk=row.prediction_log_id)
        sample = row.sample
        assert sample.source == Sample.Source.MONITORING
        assert sample.external_id == f"log-{log.request_id}"
        assert sample.data == log.data
        assert sample.content_hash == content_hash(log.data)
        # Only the random slice may land in the holdout; the others train.
        if row.strategy == "random":
            assert sample.split == split_for(sample.external_id, p.project.holdout_fraction)
        else:
            assert sample.split == Sample.Split.TRAIN
        item = items[sample.pk]
        assert item.state == QueueItem.State.OPEN
        assert (item.strategy, item.reason, item.score) == (row.strategy, row.reason, row.score)
        assert row.reason
    by_strategy = {}
    for row in surfaced:
        by_strategy.setdefault(row.strategy, []).append(row)
    assert all(r.reason.startswith("uncertain: ") for r in by_strategy["uncertainty"])
    assert all(r.reason.startswith("sub-models ") for r in by_strategy["disagreement"])
    assert "text model says" in by_strategy["disagreement"][0].reason
    assert by_strategy["novelty"][0].reason.startswith("unlike the training data")
    # The most uncertain candidates were the ones picked by uncertainty.
    ranked = sorted(p.logs, key=lambda log: log.confidence)
    picked = {r.prediction_log_id for r in by_strategy["uncertainty"]}
    assert ranked[0].pk in picked
    assert AuditEvent.objects.filter(action="surfacing.run", target_id=str(done.pk)).exists()


def test_the_default_mix_leaves_feedback_out(production):
    p = production
    correct(p.project, max(p.logs, key=lambda x: x.confidence), "other")
    done = run(p.project, p.crew.users["owner"], budget=20)
    assert done.state == SurfacingRun.State.SUCCEEDED, done.message
    # 0.6 / 0.15 / 0.05 / 0.1 of 20, normalised: 13.3 / 3.3 / 1.1 / 2.2.
    assert done.counts == {"uncertainty": 14, "disagreement": 3, "novelty": 1, "random": 2}


def test_feedback_contradiction_surfaces_with_the_users_words(production):
    p = production
    log = max(p.logs, key=lambda x: x.confidence)
    other = "other" if log.predicted == "great" else "great"
    correct(p.project, log, other)
    # A correction withdrawn by a later "confirm" does not count.
    withdrawn = sorted(p.logs, key=lambda x: -x.confidence)[1]
    correct(p.project, withdrawn, "other" if withdrawn.predicted == "great" else "great")
    correct(p.project, withdrawn, withdrawn.predicted, kind="confirm", after=5)
    done = run(p.project, p.crew.users["owner"], budget=5, mix={"feedback": 1})
    rows = list(SurfacedSample.objects.filter(run=done))
    assert [(r.prediction_log_id, r.strategy) for r in rows] == [(log.pk, "feedback")]
    assert rows[0].reason == (
        f"end user says {other}, model said {log.predicted} {log.confidence:.2f}"
    )
    assert rows[0].score == pytest.approx(log.confidence)
    assert "fewer new candidates" in done.message


def test_labelled_queued_surfaced_and_repeated_content_is_never_surfaced_again(production):
    p = production
    labelled_copy, queued_copy, twin_a, twin_b = p.logs[:4]
    # A log with the content of a labelled sample, one with that of a queued
    # (unlabelled) sample, and two logs with the same content.
    first = Sample.objects.filter(project=p.project).exclude(consensus_label=None).first()
    PredictionLog.objects.filter(pk=labelled_copy.pk).update(data=first.data)
    [queued] = add_samples(
        p.project,
        p.crew.classes,
        [("manual-1", queued_copy.data, None)],
    )
    queue_add(project=p.project, sample_ids=[queued.pk])
    PredictionLog.objects.filter(pk=twin_b.pk).update(data=twin_a.data)
    everything = len(p.logs)
    done = run(p.project, p.crew.users["owner"], budget=everything, mix={"random": 1})
    surfaced = set(
        SurfacedSample.objects.filter(run=done).values_list("prediction_log_id", flat=True)
    )
    assert labelled_copy.pk not in surfaced
    assert queued_copy.pk not in surfaced
    assert len({twin_a.pk, twin_b.pk} & surfaced) == 1
    assert len(surfaced) == everything - 3
    hashes = list(Sample.objects.filter(project=p.project).values_list("content_hash", flat=True))
    assert len(hashes) == len(set(hashes)), "a surfaced sample duplicates another's content"
    # A second run finds nothing new: every log is surfaced or a duplicate.
    again = run(p.project, p.crew.users["owner"], budget=50)
    assert again.state == SurfacingRun.State.SUCCEEDED
    assert again.counts == {}
    assert not SurfacedSample.objects.filter(run=again).exists()
    assert again.message.startswith("0 of 3 candidate logs surfaced")


def test_a_held_sample_is_not_queued_again(production):
    """A queued sample that was then flagged (its item held) still counts as
    queued: a log with its content is not surfaced, and no second item appears."""
    p = production
    log = p.logs[0]
    [held] = add_samples(p.project, p.crew.classes, [("manual-held", log.data, None)])
    queue_add(project=p.project, sample_ids=[held.pk])
    sample_flag(sample=held, by=p.crew.users["owner"], kind="ambiguous")
    assert QueueItem.objects.get(sample=held).state == QueueItem.State.HELD
    done = run(p.project, p.crew.users["owner"], budget=len(p.logs), mix={"random": 1})
    surfaced = set(
        SurfacedSample.objects.filter(run=done).values_list("prediction_log_id", flat=True)
    )
    assert surfaced and log.pk not in surfaced
    assert QueueItem.objects.filter(sample=held).count() == 1
    assert QueueItem.objects.get(sample=held).state == QueueItem.State.HELD
    assert queue_add(project=p.project, sample_ids=[held.pk]) == 0


def test_only_the_production_versions_logs_since_the_window(production):
    p = production
    old = p.logs[0]
    PredictionLog.objects.filter(pk=old.pk).update(timestamp=timezone.now() - timedelta(days=30))
    done = run(p.project, p.crew.users["owner"], budget=1000, mix={"uncertainty": 1})
    surfaced = set(
        SurfacedSample.objects.filter(run=done).values_list("prediction_log_id", flat=True)
    )
    assert old.pk not in surfaced
    assert done.candidates == len(p.logs) - 1


def test_task_redelivery_surfaces_once(production):
    p = production
    request = surfacing_request(project=p.project, by=None, budget=10, queue=False)
    first = surfacing_run_task(request.pk)
    second = surfacing_run_task(request.pk)
    assert first["state"] == second["state"] == "succeeded"
    assert second["counts"] == first["counts"]
    assert SurfacedSample.objects.filter(run=request).count() == 10
    assert QueueItem.objects.filter(project=p.project, sample__source="monitoring").count() == 10


def test_a_run_orphaned_by_a_dead_worker_runs_when_the_message_returns(production):
    p = production
    request = surfacing_request(project=p.project, by=None, budget=5, queue=False)
    # Claimed by a worker that was killed before writing anything.
    SurfacingRun.objects.filter(pk=request.pk).update(state=SurfacingRun.State.RUNNING)
    assert surfacing_run_task(request.pk)["state"] == "running"  # still within its time limit
    assert not SurfacedSample.objects.filter(run=request).exists()
    SurfacingRun.objects.filter(pk=request.pk).update(
        created_at=timezone.now() - timedelta(minutes=21)
    )
    assert surfacing_run_task(request.pk)["state"] == "succeeded"
    assert SurfacedSample.objects.filter(run=request).count() == 5


def test_request_queues_the_task_after_commit(production, django_capture_on_commit_callbacks):
    p = production
    with mock.patch("monitoring.tasks.surfacing_run_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            request = surfacing_request(project=p.project, by=p.crew.users["owner"], budget=4)
        delay.assert_not_called()  # not before the run row is committed
        for callback in callbacks:
            callback()
    delay.assert_called_once_with(request.pk)
    assert request.state == SurfacingRun.State.QUEUED
    assert request.since < timezone.now() - timedelta(days=6, hours=23)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"budget": 0}, "budget", "between 1 and"),
        ({"budget": "many"}, "budget", "“many”"),
        ({"mix": {"hunch": 1}}, "mix", "Unknown strategy “hunch”"),
        ({"mix": {"random": -1}}, "mix", "share of random must be 0 or more"),
        ({"mix": {"random": "lots"}}, "mix", "share of random must be a number"),
        ({"mix": {"random": 0}}, "mix", "above 0"),
        ({"mix": {"label_error": 1}}, "mix", "review"),
    ],
)
def test_bad_requests_name_the_field_and_create_nothing(production, changes, field, words):
    p = production
    with pytest.raises(SurfacingError) as caught:
        surfacing_request(project=p.project, by=None, queue=False, **changes)
    assert caught.value.field == field
    assert words in caught.value.message
    assert not SurfacingRun.objects.exists()


def test_no_production_model_is_a_clear_error(reviews):
    with pytest.raises(SurfacingError, match="no production model"):
        surfacing_request(project=reviews.project, by=None, queue=False)


def test_schedule_starts_due_projects_once(production):
    p = production
    MonitoringSettings.objects.create(
        project=p.project, surfacing_every_hours=6, surfacing_budget=7, surfacing_mix={"random": 1}
    )
    runs = surfacing_due()
    assert [(r.project_id, r.budget, r.mix) for r in runs] == [(p.project.pk, 7, {"random": 1.0})]
    assert surfacing_due() == []  # one was created within the last 6 hours
    assert surfacing_due(now=timezone.now() + timedelta(hours=7))  # due again later


def test_api_surface_now_and_list(production, django_capture_on_commit_callbacks):
    import json

    from django.test import Client

    p = production
    url = f"/api/v1/projects/{p.project.pk}/surfacing-runs/"
    ds = Client()
    ds.force_login(p.crew.users["data_scientist"])
    body = {"budget": 9, "mix": {"uncertainty": 2, "random": 1}}
    with (
        mock.patch("monitoring.tasks.surfacing_run_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = ds.post(url, json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    created = response.json()
    delay.assert_called_once_with(created["id"])
    assert created["state"] == "queued" and created["budget"] == 9
    assert created["mix"] == {"uncertainty": 2.0, "random": 1.0}
    assert created["model_version"] == p.version.number
    surfacing_run(run_id=created["id"])
    [listed] = ds.get(url).json()
    assert listed["state"] == "succeeded"
    assert listed["counts"] == {"uncertainty": 6, "random": 3}
    assert listed["requested_by"] == "r-data_scientist"
    # Bad input names the field; nothing is created.
    bad = ds.post(url, json.dumps({"mix": {"hunch": 1}}), content_type="application/json")
    assert bad.status_code == 400 and bad.json()["field"] == "mix"
    assert "hunch" in bad.json()["message"]
    assert SurfacingRun.objects.count() == 1
    # Experts and product managers may not; outsiders see nothing.
    for who, code in (("expert", 403), ("product_manager", 403), ("outsider", 404)):
        c = Client()
        c.force_login(p.crew.users[who])
        assert c.post(url, json.dumps(body), content_type="application/json").status_code == code
        assert c.get(url).status_code == code
    assert SurfacingRun.objects.count() == 1

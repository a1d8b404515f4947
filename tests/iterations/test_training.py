from datetime import timedelta
from io import StringIO
from pathlib import Path
from unittest import mock

import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone
from kombu.exceptions import OperationalError

from iterations.models import Artifact, EnsembleConfig, KeywordRuleSet, ModelVersion, TrainingJob
from iterations.services import training
from iterations.services.artifacts import ensemble_load
from iterations.services.training import (
    TrainingError,
    ensemble_config_default,
    snapshot_train_frame,
    training_cancel,
    training_request,
    training_run,
)
from iterations.tasks import training_run_task
from labelling.models import Sample
from leanml_site.models import AuditEvent
from ml.submodels import HistGBM
from tests.factories import LabelClassFactory, ProjectFactory

from .conftest import FIELDS, add_samples

# Every test here may write artifacts: each in its own folder.
pytestmark = pytest.mark.usefixtures("media")


def request(reviews, **kwargs):
    """A training request whose queueing is captured, not sent."""
    with mock.patch.object(training_run_task, "delay") as delay:
        delay.return_value.id = "task-1"
        job = training_request(project=reviews.project, by=reviews.user, **kwargs)
    return job


def train(reviews, **kwargs):
    job = request(reviews, **kwargs)
    return training_run(job_id=job.pk)


def test_a_request_queues_the_job_after_commit(reviews, django_capture_on_commit_callbacks):
    with (
        mock.patch.object(training_run_task, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        delay.return_value.id = "task-1"
        job = training_request(project=reviews.project, by=reviews.user)
    delay.assert_called_once_with(job.pk)
    job.refresh_from_db()
    assert (job.state, job.celery_task_id, job.refit) == ("queued", "task-1", ["text", "fields"])
    version = job.version
    assert (version.number, version.status, version.parent) == (1, "training", None)
    assert version.ensemble == reviews.config
    assert version.snapshot.row_count == 200
    assert "scikit-learn" in version.library_versions
    assert AuditEvent.objects.filter(action="training.request", target_id=str(job.pk)).exists()


def test_a_job_trains_a_candidate_with_one_artifact_per_sub_model(reviews, media):
    job = train(reviews)

    assert job.state == "succeeded", job.error
    assert (job.progress, job.attempts) == (1.0, 1)
    assert "Fitted 'text'" in job.log and "Combiner:" in job.log
    version = ModelVersion.objects.get(pk=job.version_id)
    assert version.status == "candidate"
    artifacts = {a.key: a for a in version.artifacts.all()}
    assert set(artifacts) == {"text", "fields", Artifact.COMBINER}
    assert all(a.source is None and (media / a.file.name).is_file() for a in artifacts.values())
    holdout, labels = snapshot_train_frame(version.snapshot, split="holdout")
    proba = ensemble_load(version).predict_proba(holdout)
    assert proba.shape == (len(holdout), 2)
    assert (proba.argmax(axis=1) == (labels == "other")).mean() > 0.6
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"training.request", "training.succeeded", "model_version.status"} <= actions
    statuses = AuditEvent.objects.filter(action="model_version.status", target_id=str(version.pk))
    assert [e.after["status"] for e in statuses.order_by("id")] == ["training", "candidate"]


def test_refitting_one_sub_model_reuses_the_others(reviews):
    first = train(reviews)
    parent_fields = Artifact.objects.get(version=first.version, key="fields")

    with mock.patch.object(HistGBM, "_fit", side_effect=AssertionError("refitted")):
        job = train(reviews, refit=["text"])

    assert job.state == "succeeded", job.error
    assert job.refit == ["text"]
    version = job.version
    assert version.parent_id == first.version_id
    fields = Artifact.objects.get(version=version, key="fields")
    assert fields.source == parent_fields
    assert (fields.sha256, fields.file.name) == (parent_fields.sha256, parent_fields.file.name)
    text = Artifact.objects.get(version=version, key="text")
    assert (
        text.source is None and text.file.name != first.version.artifacts.get(key="text").file.name
    )
    assert "Reused 'fields' from version 1" in job.log
    assert (
        ensemble_load(version).predict_proba(snapshot_train_frame(version.snapshot)[0]).shape[1]
        == 2
    )


def test_an_unknown_refit_key_is_refused(reviews):
    with pytest.raises(TrainingError, match=r"unknown sub-model key\(s\) \['nope'\]"):
        request(reviews, refit=["nope"])
    assert not ModelVersion.objects.exists()


def test_running_a_succeeded_job_again_does_nothing(reviews):
    job = train(reviews)
    artifacts = list(Artifact.objects.values_list("pk", "sha256"))

    again = training_run(job_id=job.pk)

    assert (again.state, again.attempts, again.finished_at) == ("succeeded", 1, job.finished_at)
    assert list(Artifact.objects.values_list("pk", "sha256")) == artifacts


def test_a_job_running_with_a_fresh_heartbeat_is_left_alone(reviews):
    job = request(reviews)
    TrainingJob.objects.filter(pk=job.pk).update(
        state="running", attempts=1, heartbeat_at=timezone.now()
    )
    assert training_run(job_id=job.pk).state == "running"
    assert not Artifact.objects.exists()


def test_a_job_whose_worker_died_is_run_again_cleanly(reviews, media):
    job = request(reviews)
    stale = timezone.now() - training.stale_after() - timedelta(seconds=1)
    TrainingJob.objects.filter(pk=job.pk).update(
        state="running", attempts=1, started_at=stale, heartbeat_at=stale
    )
    # What the killed attempt left behind: one artifact, and no candidate.
    Artifact.objects.create(version=job.version, key="text", sha256="0" * 64, size_bytes=1)

    job = training_run(job_id=job.pk)

    assert job.state == "succeeded", job.error
    assert job.attempts == 2
    assert job.version.status == "candidate"
    assert Artifact.objects.get(version=job.version, key="text").sha256 != "0" * 64
    assert AuditEvent.objects.filter(action="training.reset", target_id=str(job.pk)).exists()


def test_a_sub_model_that_raises_fails_the_job(reviews):
    EnsembleConfig.objects.create(
        project=reviews.project,
        number=2,
        submodels=[
            {"key": "text", "name": "tfidf_logreg", "fields": ["review"], "params": {}},
            {
                "key": "fields",
                "name": "hist_gbm",
                "fields": ["product"],
                "params": {"extra": {"max_depth": -3}},
            },
        ],
    )
    job = train(reviews)

    assert job.state == "failed"
    assert "sub-model 'fields' failed to fit" in job.message
    assert "\n" not in job.message
    assert job.error.startswith("Traceback") and "EnsembleError" in job.error
    assert job.version.status == "failed"
    assert not job.version.artifacts.filter(key=Artifact.COMBINER).exists()
    assert AuditEvent.objects.filter(action="training.failed", target_id=str(job.pk)).exists()


def test_too_few_labels_for_a_class_fails_with_a_clear_message(db):
    project = ProjectFactory(fields=FIELDS)
    classes = {n: LabelClassFactory(project=project, name=n) for n in ("great", "other", "rare")}
    rows = [(f"t{i}", {"review": f"good {i}", "product": "tea"}, "great") for i in range(20)]
    rows += [(f"u{i}", {"review": f"meh {i}", "product": "tea"}, "other") for i in range(20)]
    add_samples(project, classes, rows)
    Sample.objects.filter(project=project).update(split="train")
    Sample.objects.filter(external_id__in=["t0", "t1", "u0", "u1"]).update(split="holdout")
    job = training_request(project=project, by=None, queue=False)

    job = training_run(job_id=job.pk)

    assert job.state == "failed"
    assert "too few labels" in job.message and "'rare' has 0" in job.message
    assert job.version.status == "failed"


def test_a_class_without_holdout_samples_fails_with_a_clear_message(reviews):
    Sample.objects.filter(project=reviews.project, consensus_label__name="other").update(
        split="train"
    )
    job = train(reviews)
    assert job.state == "failed"
    assert job.message.startswith("no holdout samples for class(es) ['other']")


def test_an_unreachable_broker_fails_the_job_with_the_reason(
    reviews, django_capture_on_commit_callbacks
):
    with (
        mock.patch.object(
            training_run_task, "delay", side_effect=OperationalError("Connection refused")
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = training_request(project=reviews.project, by=reviews.user)
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.message.startswith("the task queue is unreachable: OperationalError")
    assert "Connection refused" in job.message
    assert job.version.status == "failed" and job.version.snapshot.row_count == 200
    # Nothing ran in the request, and the failed job is never claimed later.
    assert training_run(job_id=job.pk).state == "failed"
    assert not Artifact.objects.exists()


def test_cancelling_a_queued_job_ends_it_at_once(reviews):
    job = request(reviews)
    job = training_cancel(job=job, by=reviews.user)
    assert job.state == "cancelled" and job.version.status == "failed"
    assert training_run(job_id=job.pk).state == "cancelled"
    assert not Artifact.objects.exists()


def test_cancelling_a_running_job_stops_it_between_steps(reviews):
    job = request(reviews)
    real = training.snapshot_train_frame

    def cancel_meanwhile(snapshot, split="train"):
        # A data scientist presses "cancel" while the rows load.
        training_cancel(job=TrainingJob.objects.get(pk=job.pk), by=reviews.user)
        return real(snapshot, split)

    with mock.patch.object(training, "snapshot_train_frame", side_effect=cancel_meanwhile):
        job = training_run(job_id=job.pk)

    assert job.state == "cancelled"
    assert job.version.status == "failed"
    assert not Artifact.objects.exists()
    assert AuditEvent.objects.filter(action="training.cancelled", target_id=str(job.pk)).exists()


def test_the_task_runs_the_job(reviews):
    job = request(reviews)
    result = training_run_task.apply(args=[job.pk]).get()
    assert result == {"job": job.pk, "state": "succeeded"}
    route = current_app.amqp.router.route({}, training_run_task.name)
    assert route["queue"].name == "training"
    assert training_run_task.acks_late and training_run_task.reject_on_worker_lost


# Committed for real: the regression test is queued when training commits.
@pytest.mark.django_db(transaction=True)
def test_retrain_command_with_wait_trains_in_process(reviews, media):
    out = StringIO()
    call_command("retrain", reviews.project.pk, "--wait", "--user", "scientist", stdout=out)
    job = TrainingJob.objects.get()
    assert job.state == "succeeded" and job.requested_by == reviews.user
    assert f"version {job.version.number}: succeeded" in out.getvalue()
    # Its regression test ran here too, rather than waiting for a worker.
    report = job.version.reports.get()
    assert f"Regression report {report.content_hash[:12]}" in out.getvalue()


def test_the_default_ensemble_follows_the_project_fields(db):
    project = ProjectFactory(fields=FIELDS)
    KeywordRuleSet.objects.create(
        project=project, number=1, rules=[{"pattern": "yum", "label": "great"}]
    )
    config = ensemble_config_default(project=project)
    assert [(s["key"], s["name"], s["fields"]) for s in config.submodels] == [
        ("text", "tfidf_logreg", ["review"]),
        ("fields", "hist_gbm", ["product"]),
        ("rules", "keyword_rules", ["review"]),
    ]
    assert ensemble_config_default(project=project) == config


def test_keyword_rules_are_taken_from_the_version_rule_set(reviews):
    KeywordRuleSet.objects.create(
        project=reviews.project, number=1, rules=[{"pattern": "delicious", "label": "great"}]
    )
    config = reviews.config
    config.submodels = [
        *config.submodels,
        {"key": "rules", "name": "keyword_rules", "fields": ["review"], "params": {}},
    ]
    config.save()
    job = train(reviews)
    assert job.state == "succeeded", job.error
    rules = ensemble_load(job.version).submodel("rules")
    assert [r["pattern"] for r in rules.params.rules] == ["delicious"]
    assert Path(job.version.artifacts.get(key="rules").file.name).name == "rules.skops"


def test_training_rows_carry_the_data_of_the_snapshotted_revision(reviews):
    from iterations.services.snapshots import snapshot_create
    from labelling.services.cleaning import sample_revise

    sample = Sample.objects.filter(project=reviews.project, split="train").order_by("id").first()
    original = sample.data["review"]
    before = snapshot_create(project=reviews.project, by=reviews.user)
    sample_revise(sample=sample, by=reviews.user, changes={"review": "corrected text"})
    after = snapshot_create(project=reviews.project, by=reviews.user)

    old_frame, _ = snapshot_train_frame(before)
    new_frame, _ = snapshot_train_frame(after)

    assert old_frame.at[sample.external_id, "review"] == original
    assert new_frame.at[sample.external_id, "review"] == "corrected text"
    assert len(old_frame) == len(new_frame) == sum(before.class_counts["train"].values())


def test_the_task_looks_again_later_when_another_worker_holds_the_job(reviews):
    from celery.exceptions import Retry

    job = request(reviews)
    TrainingJob.objects.filter(pk=job.pk).update(
        state="running", attempts=1, heartbeat_at=timezone.now()
    )
    with (
        mock.patch.object(training_run_task, "retry", side_effect=Retry()) as retry,
        pytest.raises(Retry),
    ):
        training_run_task.run(job.pk)
    assert retry.call_args.kwargs["countdown"] > training.stale_after().total_seconds()

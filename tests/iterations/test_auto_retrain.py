"""The rule "retrain automatically every N new consensus labels"."""

from unittest import mock

import pytest

from iterations.models import ModelSettings, ModelVersion, TrainingJob
from iterations.services.auto_retrain import auto_retrain_check, new_label_count
from iterations.services.training import training_run
from iterations.tasks import auto_retrain_check_task, training_run_task
from labelling.models import Flag, Sample
from leanml_site.models import AuditEvent

from .conftest import add_samples, review_rows

# Every test here may write artifacts: each in its own folder.
pytestmark = pytest.mark.usefixtures("media")


@pytest.fixture
def delay():
    with mock.patch.object(training_run_task, "delay") as delay:
        delay.return_value.id = "task-1"
        yield delay


def set_rule(project, every):
    ModelSettings.objects.update_or_create(project=project, defaults={"retrain_every": every})


def finish(job):
    """Run the queued job in process, as a worker would."""
    return training_run(job_id=job.pk)


def test_a_project_without_a_model_trains_once_it_has_n_labels(reviews, delay):
    set_rule(reviews.project, 150)
    (job,) = auto_retrain_check()
    assert job.requested_by is None
    assert job.version.number == 1 and job.version.snapshot.row_count == 200
    event = AuditEvent.objects.get(action="training.automatic")
    assert event.actor is None
    assert event.after["new_labels"] == 200 and event.after["reason"].startswith("automatic")


def test_it_counts_new_labels_since_the_latest_snapshot(reviews, delay):
    set_rule(reviews.project, 50)
    (job,) = auto_retrain_check()
    assert finish(job).state == "succeeded"
    assert new_label_count(reviews.project) == 0
    assert auto_retrain_check() == []

    # 40 new labels: not yet.
    rows = review_rows(300)
    add_samples(reviews.project, reviews.classes, rows[200:240])
    assert new_label_count(reviews.project) == 40
    assert auto_retrain_check() == []

    # Labels that are not usable do not count: a flagged one, a pending one.
    flagged, pending = add_samples(reviews.project, reviews.classes, rows[240:242])
    Flag.objects.create(sample=flagged, kind="ambiguous", created_by=reviews.user)
    Sample.objects.filter(pk=pending.pk).update(consensus_state=Sample.Consensus.PENDING)
    assert new_label_count(reviews.project) == 40
    assert auto_retrain_check() == []

    # Ten more make 50: a second version, trained on all 250.
    add_samples(reviews.project, reviews.classes, rows[250:260])
    (second,) = auto_retrain_check()
    assert second.version.number == 2
    assert second.version.parent.number == 1
    assert second.version.snapshot.row_count == 250


def test_it_waits_while_a_training_job_is_queued_or_running(reviews, delay):
    set_rule(reviews.project, 10)
    (job,) = auto_retrain_check()
    add_samples(reviews.project, reviews.classes, review_rows(300)[200:260])
    assert auto_retrain_check() == []  # queued
    TrainingJob.objects.filter(pk=job.pk).update(state=TrainingJob.State.RUNNING)
    assert auto_retrain_check() == []  # running
    assert TrainingJob.objects.count() == 1


def test_a_failed_retrain_is_not_retried_until_n_more_labels(reviews, delay):
    set_rule(reviews.project, 100)
    (job,) = auto_retrain_check()
    TrainingJob.objects.filter(pk=job.pk).update(state=TrainingJob.State.FAILED)
    ModelVersion.objects.filter(pk=job.version_id).update(status=ModelVersion.Status.FAILED)
    assert auto_retrain_check() == []
    assert TrainingJob.objects.count() == 1


def test_projects_without_the_rule_are_left_alone(reviews, delay):
    assert auto_retrain_check() == []
    set_rule(reviews.project, None)
    assert auto_retrain_check() == []
    assert not TrainingJob.objects.exists()
    delay.assert_not_called()


def test_a_project_that_cannot_train_is_skipped_and_the_others_train(reviews, delay):
    from tests.factories import LabelClassFactory, ProjectFactory

    broken = ProjectFactory(name="No fields", fields=[])
    classes = {
        "great": LabelClassFactory(project=broken, name="great"),
        "other": LabelClassFactory(project=broken, name="other"),
    }
    add_samples(broken, classes, review_rows(20))
    set_rule(broken, 1)
    set_rule(reviews.project, 1)
    jobs = auto_retrain_check()
    assert [job.project_id for job in jobs] == [reviews.project.pk]
    assert not TrainingJob.objects.filter(project=broken).exists()


def test_the_beat_task_queues_the_job_after_commit(
    reviews, delay, django_capture_on_commit_callbacks
):
    set_rule(reviews.project, 100)
    with django_capture_on_commit_callbacks(execute=True):
        result = auto_retrain_check_task()
    job = TrainingJob.objects.get()
    assert result == {"queued": [job.pk]}
    delay.assert_called_once_with(job.pk)

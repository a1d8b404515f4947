"""``manage.py demo`` builds the fine-food demo once, from the installed data."""

import io

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from iterations.models import (
    Artifact,
    DatasetSnapshot,
    Decision,
    Iteration,
    KeywordRuleSet,
    ModelVersion,
    RegressionReport,
    TrainingJob,
)
from iterations.services.artifacts import ensemble_load
from iterations.services.training import snapshot_train_frame
from labelling.management.commands import demo
from labelling.models import Annotation, Membership, Project, QueueItem, Sample
from leanml_site.models import AuditEvent
from leanml_site.roles import Role
from ml.submodels import create
from monitoring.models import (
    DriftCheck,
    GroundTruth,
    MetricWindow,
    PredictionLog,
    SurfacingRun,
)

LIMIT = 40  # rows per table: 20 labelled on import, 12 double-labelled, the rest queued


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DEBUG = True  # the test runner turns it off; the demo is for DEBUG runs
    return tmp_path


def build(*args):
    out = io.StringIO()
    call_command("demo", "--limit", str(LIMIT), *args, stdout=out)
    return out.getvalue()


def logins(var_dir):
    rows = (line.split() for line in (var_dir / "demo_logins.txt").read_text().splitlines())
    return {row[0]: row[1] for row in rows}


@pytest.mark.django_db
def test_it_builds_users_for_every_role_and_prints_their_logins(var_dir):
    output = build("--login-url", "http://127.0.0.1:8123/login/")

    project = Project.objects.get(name="Fine-food reviews")
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {
        "owner": Role.OWNER,
        "expert": Role.EXPERT,
        "expert2": Role.EXPERT,
        "scientist": Role.DATA_SCIENTIST,
        "pm": Role.PRODUCT_MANAGER,
    }
    passwords = logins(var_dir)
    assert set(passwords) == set(roles)
    assert len(set(passwords.values())) == 5
    for username, password in passwords.items():
        assert get_user_model().objects.get(username=username).check_password(password)
        assert f"{username:<10} {password}" in output
    assert "http://127.0.0.1:8123/login/" in output
    assert (var_dir / "demo_logins.txt").stat().st_mode & 0o777 == 0o600


@pytest.mark.django_db
def test_it_imports_the_real_reviews_with_some_labels_and_queues_the_rest(var_dir):
    build()

    project = Project.objects.get(name="Fine-food reviews")
    assert list(project.label_classes.values_list("name", "hotkey")) == [
        ("great", "1"),
        ("other", "2"),
    ]
    assert [f["name"] for f in project.shown_fields] == ["review", "product"]
    assert project.overlap == 1
    assert "great" in project.guidelines
    samples = Sample.objects.filter(project=project)
    assert samples.filter(external_id__startswith="train-").count() == LIMIT
    # testing_data is held back as production traffic, never imported.
    assert not samples.filter(external_id__startswith="test-").exists()
    first = samples.get(external_id="train-1")
    assert first.data["review"].startswith("this stuff is  not stuffing")
    assert first.data["product"] == "B000J0LSBG"

    imported = Annotation.objects.filter(project=project, origin=Annotation.Origin.IMPORT)
    assert imported.count() == LIMIT // 2
    assert set(imported.values_list("annotator__username", flat=True)) == {"scientist"}
    assert first.consensus_label.name == "other"  # the dataset's score for row 1

    open_items = QueueItem.objects.filter(
        project=project, state=QueueItem.State.OPEN, strategy="imported"
    )
    # 20 unlabelled training rows minus 12 double-labelled.
    assert open_items.count() == LIMIT // 2 - demo.DOUBLE_LABELLED_ROWS
    assert set(open_items.values_list("reason", flat=True)) == {"Imported"}
    assert not open_items.filter(sample__annotations__isnull=False).exists()


@pytest.mark.django_db
def test_two_experts_disagree_on_a_few_samples_for_review(var_dir):
    build()

    project = Project.objects.get(name="Fine-food reviews")
    human = Annotation.objects.filter(project=project, origin=Annotation.Origin.HUMAN)
    assert human.count() == 2 * demo.DOUBLE_LABELLED_ROWS
    assert set(human.values_list("annotator__username", flat=True)) == {"expert", "expert2"}
    assert not human.filter(seconds__isnull=True).exists()
    states = Sample.objects.filter(project=project, annotations__origin="human").distinct()
    assert states.filter(consensus_state=Sample.Consensus.DISPUTED).count() == len(
        demo.DISAGREEMENTS
    )
    assert states.filter(consensus_state=Sample.Consensus.AGREED).count() == (
        demo.DOUBLE_LABELLED_ROWS - len(demo.DISAGREEMENTS)
    )


@pytest.mark.django_db
def test_a_second_run_changes_nothing_and_prints_the_same_logins(var_dir):
    build()
    before = logins(var_dir)
    counts = (Project.objects.count(), Sample.objects.count(), Annotation.objects.count())

    output = build()

    assert "already there" in output
    assert logins(var_dir) == before
    assert before["expert"] in output
    assert (Project.objects.count(), Sample.objects.count(), Annotation.objects.count()) == counts


@pytest.mark.django_db
def test_reset_rebuilds_with_new_passwords_and_records_it(var_dir):
    build()
    old = logins(var_dir)
    old_project = Project.objects.get(name="Fine-food reviews")

    build("--reset")

    project = Project.objects.get(name="Fine-food reviews")
    assert project.pk != old_project.pk
    assert Sample.objects.filter(project=project, external_id__startswith="train-").count() == LIMIT
    assert not Sample.objects.filter(project_id=old_project.pk).exists()
    new = logins(var_dir)
    assert new["owner"] != old["owner"]
    assert get_user_model().objects.get(username="owner").check_password(new["owner"])
    assert AuditEvent.objects.filter(action="demo.reset").count() == 1


# Transactional: the regression test is queued when the training commits.
@pytest.mark.django_db(transaction=True)
def test_it_ends_with_version_1_in_production_through_a_whole_iteration(var_dir):
    output = build()

    project = Project.objects.get(name="Fine-food reviews")
    rule_set = KeywordRuleSet.objects.get(project=project)
    assert (rule_set.number, rule_set.created_by.username) == (1, "expert")
    iteration = Iteration.objects.get(project=project)
    assert (iteration.title, iteration.opened_by.username) == ("First model", "scientist")
    assert iteration.status == Iteration.Status.APPROVED
    version = ModelVersion.objects.get(project=project)
    assert (version.number, version.iteration, iteration.candidate) == (1, iteration, version)
    assert version.status == ModelVersion.Status.PRODUCTION
    assert (version.rule_set, version.created_by.username) == (rule_set, "scientist")
    job = TrainingJob.objects.get(version=version)
    assert job.state == TrainingJob.State.SUCCEEDED, job.error
    # The default ensemble has its three sub-models, the rules among them.
    assert [m["key"] for m in version.ensemble.submodels] == ["text", "fields", "rules"]
    keys = set(version.artifacts.values_list("key", flat=True))
    assert keys == {"text", "fields", "rules", Artifact.COMBINER}
    assert all((var_dir / "media" / a.file.name).is_file() for a in version.artifacts.all())
    # The regression report the product manager signed, and the signature on it.
    report = RegressionReport.objects.get(candidate=version)
    assert report.passed
    assert report.payload["candidate"] == 1 and report.payload["production"] is None
    # The product manager's value metric is set; the report weighs the model with it.
    assert report.payload["value"] == {"unit": "EUR", "baseline": 500.0}
    scored = report.payload["versions"][0]
    assert scored["beats_baseline"] is (scored["value_per_1000"] > 500)
    decision = Decision.objects.get(iteration=iteration)
    assert (decision.verdict, decision.by.username) == ("approve", "pm")
    assert (decision.version, decision.report, decision.report_hash) == (
        version,
        report,
        report.content_hash,
    )
    # The stored model loads and predicts the project's classes on its holdout.
    holdout, labels = snapshot_train_frame(version.snapshot, split="holdout")
    assert len(holdout) > 0
    assert ensemble_load(version).predict_proba(holdout).shape == (len(holdout), 2)
    actions = list(
        AuditEvent.objects.filter(project=project, target_id=str(version.pk))
        .filter(action="model_version.status")
        .order_by("pk")
        .values_list("actor__username", "after__status")
    )
    assert actions == [
        ("scientist", "training"),
        ("scientist", "candidate"),
        ("pm", "approved"),
        ("owner", "production"),
    ]
    assert AuditEvent.objects.filter(
        project=project, action="rule_set.create", actor__username="expert"
    ).exists()
    assert "Version 1 is in production" in output
    # Tasks ran in the command only while it trained: the setting is back.
    assert not current_app.conf.task_always_eager


# Transactional, as above: monitoring starts once version 1 is in production.
@pytest.mark.django_db(transaction=True)
def test_the_held_back_reviews_are_its_production_traffic_with_monitoring_filled(var_dir):
    output = build()

    project = Project.objects.get(name="Fine-food reviews")
    version = ModelVersion.objects.get(project=project, status=ModelVersion.Status.PRODUCTION)
    logs = PredictionLog.objects.filter(project=project)
    # Every held-back (testing_data) review, scored by version 1, over two weeks.
    assert logs.count() == LIMIT
    assert set(logs.values_list("model_version", flat=True)) == {version.pk}
    assert all(log.request_id.startswith("req-test-") for log in logs)
    first, last = logs.order_by("timestamp").first(), logs.order_by("timestamp").last()
    assert 13 <= (last.timestamp - first.timestamp).days <= 14
    # End users answered some; the windows count them.
    assert GroundTruth.objects.filter(project=project, source="feedback").exists()
    days = MetricWindow.objects.filter(project=project, granularity="day", segment="")
    assert sum(w.aggregate["n"] for w in days) == LIMIT
    assert (
        sum(w.aggregate["labelled"] for w in days)
        == GroundTruth.objects.filter(project=project).count()
    )
    # Each log carries its review's length as a segment, with windows of its own.
    lengths = {log.segment["review_length"] for log in logs}
    assert lengths <= {"short", "medium", "long"} and len(lengths) > 1
    segments = MetricWindow.objects.filter(project=project, granularity="day").exclude(segment="")
    by_segment = {}
    for window in segments:
        by_segment[window.segment] = by_segment.get(window.segment, 0) + window.aggregate["n"]
    assert set(by_segment) == {f"review_length={length}" for length in lengths}
    assert sum(by_segment.values()) == LIMIT
    assert DriftCheck.objects.filter(project=project, model_version=version).exists()
    # A surfacing run put some of them in the queue, each with its reason.
    run = SurfacingRun.objects.get(project=project)
    assert run.state == SurfacingRun.State.SUCCEEDED
    surfaced = QueueItem.objects.filter(project=project, state="open").exclude(strategy="imported")
    assert surfaced.count() == sum(run.counts.values()) > 0
    assert all(item.reason for item in surfaced)
    assert "held-back reviews logged as its production predictions" in output


def test_each_of_the_experts_rules_fires_on_real_reviews_and_mostly_rightly():
    train, _ = demo.load_reviews()
    # The rule set stores the class as "label"; the sub-model reads "class".
    rules = [{("class" if k == "label" else k): v for k, v in r.items()} for r in demo.RULES]
    fired = create("keyword_rules", fields=["review"], params={"rules": rules}).fired(train)

    for column, rule in zip(fired.columns, demo.RULES, strict=True):
        hits = fired[column]
        assert hits.sum() >= 10, column
        assert (train["score"][hits] == rule["label"]).mean() >= 0.7, column


@pytest.mark.django_db(transaction=True)
def test_reset_deletes_the_models_and_their_files_too(var_dir):
    build()
    old_project = Project.objects.get(name="Fine-food reviews")
    old_files = [var_dir / "media" / a.file.name for a in Artifact.objects.all()]
    assert old_files and all(path.is_file() for path in old_files)
    assert Decision.objects.exists() and RegressionReport.objects.exists()

    # Someone tried the monitoring API on the demo's production model.
    now = timezone.now()
    PredictionLog.objects.create(
        project=old_project,
        request_id="r-1",
        timestamp=now,
        received_at=now,
        model_version=ModelVersion.objects.get(project=old_project),
        data={"review": "Stale and sad.", "product": "B000J0LSBG"},
        predicted="other",
        probabilities={"great": 0.2, "other": 0.8},
        confidence=0.8,
    )

    build("--reset")

    assert not PredictionLog.objects.filter(project_id=old_project.pk).exists()
    assert not any(path.exists() for path in old_files)
    assert not (var_dir / "media" / "artifacts" / str(old_project.pk)).exists()
    for model in (
        Iteration,
        ModelVersion,
        TrainingJob,
        DatasetSnapshot,
        KeywordRuleSet,
        RegressionReport,
    ):
        assert not model.objects.filter(project_id=old_project.pk).exists(), model
    assert not Artifact.objects.filter(version__project_id=old_project.pk).exists()
    assert not Decision.objects.filter(iteration__project_id=old_project.pk).exists()
    # And the new build trained its own first model.
    project = Project.objects.get(name="Fine-food reviews")
    version = ModelVersion.objects.get(project=project)
    assert version.status == ModelVersion.Status.PRODUCTION
    assert all((var_dir / "media" / a.file.name).is_file() for a in version.artifacts.all())


@pytest.mark.django_db
def test_reset_leaves_a_teams_own_project_of_the_same_name_alone(var_dir, team):
    team.project.name = "Fine-food reviews"
    team.project.save()

    build("--reset")

    assert Project.objects.filter(pk=team.project.pk).exists()
    assert Project.objects.filter(name="Fine-food reviews").count() == 2


@pytest.mark.django_db
def test_lost_logins_get_new_passwords_instead_of_none(var_dir):
    build()
    (var_dir / "demo_logins.txt").unlink()

    build()

    passwords = logins(var_dir)
    assert get_user_model().objects.get(username="pm").check_password(passwords["pm"])


@pytest.mark.django_db
def test_it_refuses_to_run_on_production_settings(var_dir, settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        build()

    assert not Project.objects.exists()

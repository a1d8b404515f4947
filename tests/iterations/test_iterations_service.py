"""The iterations service: open, retrain, status that follows the evidence,
and the decision on the exact report."""

from unittest import mock

import pytest

from iterations.models import Decision, Iteration, ModelVersion, TrainingJob
from iterations.services.iterations import (
    IterationError,
    iteration_abandon,
    iteration_create,
    iteration_decide,
    iteration_report_ready,
    iteration_retrain,
    iteration_training_finished,
    latest_report,
)
from iterations.services.training import TrainingError, training_run
from leanml_site.models import AuditEvent
from ml.gates import GateConfig

from .report_payload import make_report
from .test_views_iterations import open_iteration, snapshot, version

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready_iteration(team):
    """An iteration whose candidate v2 has a report against production v1."""
    great, other = team.classes
    from tests.factories import SampleFactory

    s = SampleFactory(project=team.project)
    snap = snapshot(team, [(s, 1, great)])
    production = version(team, 1, "production", snap)
    iteration = open_iteration(team)
    candidate = version(team, 2, "candidate", snap, iteration)
    Iteration.objects.filter(pk=iteration.pk).update(candidate=candidate, status="training")
    iteration.refresh_from_db()
    return iteration, production, candidate


def report_for(team, iteration, production, **kwargs):
    report = make_report(
        project=team.project, candidate=iteration.candidate, production=production, **kwargs
    )
    iteration_report_ready(report)
    iteration.refresh_from_db()
    return report


# --- create ----------------------------------------------------------------------------


def test_create_trims_and_audits(team):
    iteration = iteration_create(
        project=team.project,
        by=team.users["owner"],
        title="  Rules for refunds ",
        hypothesis=" Refund mentions mean other. ",
        expected_gain=" +4 EUR ",
        effort="x" * 100,
    )
    assert (iteration.title, iteration.hypothesis, iteration.expected_gain) == (
        "Rules for refunds",
        "Refund mentions mean other.",
        "+4 EUR",
    )
    assert len(iteration.effort) == 64 and iteration.status == "open"
    event = AuditEvent.objects.get(action="iteration.open")
    assert event.after["title"] == "Rules for refunds" and event.actor == team.users["owner"]


@pytest.mark.parametrize(
    ("title", "hypothesis", "field"), [(" ", "h", "title"), ("t", "", "hypothesis")]
)
def test_create_names_the_missing_field(team, title, hypothesis, field):
    with pytest.raises(IterationError) as caught:
        iteration_create(
            project=team.project, by=team.users["owner"], title=title, hypothesis=hypothesis
        )
    assert caught.value.field == field
    assert not Iteration.objects.exists() and not AuditEvent.objects.exists()


# --- status follows the evidence -------------------------------------------------------


def test_a_report_makes_the_iteration_ready(team, ready_iteration):
    iteration, production, _ = ready_iteration
    report_for(team, iteration, production)
    assert iteration.status == "ready"
    event = AuditEvent.objects.filter(action="iteration.status").latest("pk")
    assert (event.before, event.after, event.actor) == (
        {"status": "training"},
        {"status": "ready"},
        None,
    )


def test_a_report_of_an_older_attempt_leaves_the_iteration_alone(team, ready_iteration):
    iteration, production, candidate = ready_iteration
    newer = version(team, 3, "training", candidate.snapshot, iteration)
    Iteration.objects.filter(pk=iteration.pk).update(candidate=newer)
    make_report(project=team.project, candidate=candidate, production=production)
    iteration_report_ready(candidate.reports.get())
    iteration.refresh_from_db()
    assert iteration.status == "training"


def test_a_failed_training_puts_the_iteration_back_to_open(team, ready_iteration):
    iteration, _, candidate = ready_iteration
    iteration_training_finished(candidate)
    iteration.refresh_from_db()
    assert iteration.status == "open" and iteration.candidate == candidate


def test_latest_report_is_the_newest(team, ready_iteration):
    iteration, production, candidate = ready_iteration
    assert latest_report(None) is None and latest_report(candidate) is None
    make_report(project=team.project, candidate=candidate, production=production)
    newest = make_report(project=team.project, candidate=candidate, production=production, seed=3)
    assert latest_report(candidate) == newest


# --- retrain ---------------------------------------------------------------------------


def test_retrain_trains_a_candidate_for_the_iteration_end_to_end(reviews, media):
    """Open → training → (worker) candidate → report → ready → approved."""
    from tests.factories import MembershipFactory, UserFactory

    pm = UserFactory(username="pm")
    MembershipFactory(project=reviews.project, user=pm, role="product_manager")
    iteration = iteration_create(
        project=reviews.project, by=reviews.user, title="First model", hypothesis="Words tell."
    )
    job = iteration_retrain(iteration=iteration, by=reviews.user, queue=False)
    iteration.refresh_from_db()
    assert (iteration.status, iteration.candidate_id) == ("training", job.version_id)
    assert job.version.iteration_id == iteration.pk

    job = training_run(job_id=job.pk)
    assert job.state == "succeeded", job.error
    iteration.refresh_from_db()
    assert iteration.status == "training"  # waiting for its report

    report = make_report(
        project=reviews.project, candidate=ModelVersion.objects.get(pk=job.version_id)
    )
    iteration_report_ready(report)
    iteration.refresh_from_db()
    assert iteration.status == "ready"
    decision = iteration_decide(
        iteration=iteration, by=pm, verdict="approve", report_hash=report.content_hash
    )
    assert decision.version_id == job.version_id
    assert ModelVersion.objects.get(pk=job.version_id).status == "approved"


def test_a_failing_training_reopens_the_iteration(reviews, media):
    iteration = iteration_create(
        project=reviews.project, by=reviews.user, title="Boom", hypothesis="It breaks."
    )
    job = iteration_retrain(iteration=iteration, by=reviews.user, queue=False)
    with mock.patch("ml.submodels.HistGBM.fit", side_effect=RuntimeError("sub-model exploded")):
        job = training_run(job_id=job.pk)
    assert job.state == "failed" and "sub-model exploded" in job.message
    iteration.refresh_from_db()
    assert iteration.status == "open"


def test_retrain_with_an_unknown_sub_model_changes_nothing(reviews):
    iteration = iteration_create(
        project=reviews.project, by=reviews.user, title="t", hypothesis="h"
    )
    with pytest.raises(TrainingError, match="nope"):
        iteration_retrain(iteration=iteration, by=reviews.user, refit=["nope"], queue=False)
    iteration.refresh_from_db()
    assert iteration.status == "open" and iteration.candidate is None
    assert not ModelVersion.objects.exists() and not TrainingJob.objects.exists()


@pytest.mark.parametrize("status", ["approved", "rejected", "abandoned"])
def test_a_closed_iteration_is_not_retrained(reviews, status):
    iteration = iteration_create(
        project=reviews.project, by=reviews.user, title="t", hypothesis="h"
    )
    Iteration.objects.filter(pk=iteration.pk).update(status=status)
    iteration.refresh_from_db()
    with pytest.raises(IterationError, match="open a new iteration"):
        iteration_retrain(iteration=iteration, by=reviews.user, queue=False)
    assert not ModelVersion.objects.exists()


# --- decide ----------------------------------------------------------------------------


def test_reject_is_recorded_with_version_report_and_audit(team, ready_iteration):
    iteration, production, candidate = ready_iteration
    report = report_for(team, iteration, production)
    pm = team.users["product_manager"]
    decision = iteration_decide(
        iteration=iteration,
        by=pm,
        verdict="reject",
        comment=" Too risky ",
        report_hash=report.content_hash,
    )
    assert (decision.verdict, decision.comment, decision.report, decision.version) == (
        "reject",
        "Too risky",
        report,
        candidate,
    )
    candidate.refresh_from_db()
    iteration.refresh_from_db()
    assert (candidate.status, iteration.status) == ("rejected", "rejected")
    actions = list(
        AuditEvent.objects.filter(actor=pm).order_by("pk").values_list("action", flat=True)
    )
    assert actions == ["model_version.status", "iteration.reject", "iteration.status"]
    with pytest.raises(ValueError, match="append-only"):
        decision.save()


def test_decide_without_a_hash_uses_the_latest_report(team, ready_iteration):
    iteration, production, _ = ready_iteration
    make_report(project=team.project, candidate=iteration.candidate, production=production)
    newest = report_for(team, iteration, production, seed=5)
    decision = iteration_decide(
        iteration=iteration, by=team.users["owner"], verdict="approve", comment="ok"
    )
    assert decision.report == newest


@pytest.mark.parametrize(
    ("verdict", "comment", "hash_", "field", "message"),
    [
        ("maybe", "", None, "verdict", "Unknown verdict"),
        ("reject", "  ", None, "comment", "Say why you reject"),
        ("approve", "ok", "0" * 64, "report_hash", "report changed since you opened"),
    ],
)
def test_decide_refuses_and_writes_nothing(
    team, ready_iteration, verdict, comment, hash_, field, message
):
    iteration, production, candidate = ready_iteration
    report_for(team, iteration, production)
    events = AuditEvent.objects.count()
    with pytest.raises(IterationError, match=message) as caught:
        iteration_decide(
            iteration=iteration,
            by=team.users["owner"],
            verdict=verdict,
            comment=comment,
            report_hash=hash_,
        )
    assert caught.value.field == field
    assert not Decision.objects.exists() and AuditEvent.objects.count() == events
    candidate.refresh_from_db()
    assert candidate.status == "candidate"


def test_approving_past_a_failed_gate_needs_a_comment(team, ready_iteration):
    iteration, production, _ = ready_iteration
    report = report_for(
        team, iteration, production, accuracies=(0.6, 0.9), gates=GateConfig(value_margin=None)
    )
    assert not report.passed
    with pytest.raises(IterationError, match="A gate failed") as caught:
        iteration_decide(iteration=iteration, by=team.users["owner"], verdict="approve")
    assert caught.value.field == "comment"
    decision = iteration_decide(
        iteration=iteration, by=team.users["owner"], verdict="approve", comment="Worth the risk."
    )
    assert decision.verdict == "approve"
    audit = AuditEvent.objects.get(action="iteration.approve")
    assert audit.after["gates_passed"] is False and audit.after["comment"] == "Worth the risk."


def test_an_iteration_without_a_report_cannot_be_decided(team, ready_iteration):
    iteration, _, _ = ready_iteration
    with pytest.raises(IterationError, match="only an iteration whose candidate has a regression"):
        iteration_decide(iteration=iteration, by=team.users["owner"], verdict="reject", comment="x")


def test_a_decided_iteration_is_not_decided_twice(team, ready_iteration):
    iteration, production, _ = ready_iteration
    report_for(team, iteration, production)
    iteration_decide(iteration=iteration, by=team.users["owner"], verdict="reject", comment="no")
    with pytest.raises(IterationError, match="rejected"):
        iteration_decide(
            iteration=iteration, by=team.users["owner"], verdict="approve", comment="yes"
        )
    assert Decision.objects.count() == 1


# --- abandon ---------------------------------------------------------------------------


def test_abandon_records_the_reason(team, ready_iteration):
    iteration, _, _ = ready_iteration
    iteration_abandon(iteration=iteration, by=team.users["data_scientist"], comment="Dead end")
    iteration.refresh_from_db()
    assert iteration.status == "abandoned"
    event = AuditEvent.objects.filter(action="iteration.status").latest("pk")
    assert event.after == {"status": "abandoned", "comment": "Dead end"}


def test_a_decided_iteration_is_not_abandoned(team, ready_iteration):
    iteration, production, _ = ready_iteration
    report_for(team, iteration, production)
    iteration_decide(iteration=iteration, by=team.users["owner"], verdict="reject", comment="no")
    with pytest.raises(IterationError, match="stays as it was decided"):
        iteration_abandon(iteration=iteration, by=team.users["owner"])
    iteration.refresh_from_db()
    assert iteration.status == "rejected"


def test_abandoning_cancels_the_retrain_it_started(reviews):
    iteration = iteration_create(
        project=reviews.project, by=reviews.user, title="Dead end", hypothesis="Maybe."
    )
    job = iteration_retrain(iteration=iteration, by=reviews.user, queue=False)
    iteration_abandon(iteration=iteration, by=reviews.user, comment="Wrong idea")
    job.refresh_from_db()
    iteration.refresh_from_db()
    assert job.state == TrainingJob.State.CANCELLED
    assert job.version.status == ModelVersion.Status.FAILED  # never a candidate
    assert iteration.status == "abandoned"
    # A worker picking the message up later finds nothing to do.
    assert training_run(job_id=job.pk).state == TrainingJob.State.CANCELLED

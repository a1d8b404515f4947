"""Iterations: a hypothesis, the model versions trained to test it, and the
product manager's decision.

Status follows the evidence: ``open`` (nothing running) → ``training`` (a
retrain is queued or running) → ``ready`` (a candidate has a regression
report) → ``approved`` / ``rejected``. A failed or cancelled retrain puts the
iteration back to ``open``; a new retrain of a ``ready`` iteration starts over.
Decisions are tied to the exact version and report hash they were made on.
"""

from django.db import transaction
from django.utils import timezone

from leanml_site.audit import audit_record
from leanml_site.errors import Refusal

from ..models import Decision, Iteration, ModelVersion, RegressionReport, TrainingJob
from .training import training_cancel, training_request

# Iterations a retrain may start from; a decided one is history.
RETRAINABLE = (Iteration.Status.OPEN, Iteration.Status.READY, Iteration.Status.TRAINING)


class IterationError(Refusal):
    """The action is not possible in the iteration's current state; the
    message says why, for people. ``field`` names the form field at fault."""


def iteration_create(*, project, by, title, hypothesis, expected_gain="", effort="") -> Iteration:
    title, hypothesis = (title or "").strip(), (hypothesis or "").strip()
    if not title:
        raise IterationError("Give the iteration a title.", field="title")
    if not hypothesis:
        raise IterationError(
            "Write the hypothesis: the insight this iteration tests.", field="hypothesis"
        )
    with transaction.atomic():
        iteration = Iteration.objects.create(
            project=project,
            title=title[:200],
            hypothesis=hypothesis,
            expected_gain=(expected_gain or "").strip(),
            effort=(effort or "").strip()[:64],
            opened_by=by,
        )
        audit_record(
            actor=by,
            action="iteration.open",
            project=project,
            target=iteration,
            after={"title": iteration.title, "hypothesis": iteration.hypothesis},
        )
    return iteration


def iteration_retrain(*, iteration, by, refit=None, seed=0, queue=True):
    """Train a new candidate for the iteration (see ``training_request``);
    the version is linked to the iteration and becomes its candidate."""
    if iteration.status not in RETRAINABLE:
        raise IterationError(
            f"This iteration is {iteration.get_status_display().lower()}; "
            "open a new iteration to train again."
        )
    with transaction.atomic():
        job = training_request(
            project=iteration.project, by=by, refit=refit, seed=seed, queue=queue
        )
        ModelVersion.objects.filter(pk=job.version_id).update(iteration=iteration)
        _set_status(iteration, Iteration.Status.TRAINING, actor=by, candidate=job.version)
    return job


def iteration_training_finished(version) -> None:
    """Called when a version's training fails or is cancelled: its iteration,
    if the version is still the candidate, goes back to ``open``."""
    iteration = _iteration_of(version)
    if iteration is not None and iteration.status == Iteration.Status.TRAINING:
        _set_status(iteration, Iteration.Status.OPEN, actor=None)


def iteration_report_ready(report: RegressionReport) -> None:
    """Called once a regression report is written: the iteration whose
    candidate it is becomes ready for sign-off."""
    iteration = _iteration_of(report.candidate)
    if iteration is not None and iteration.status in (
        Iteration.Status.TRAINING,
        Iteration.Status.OPEN,
    ):
        _set_status(iteration, Iteration.Status.READY, actor=None)


def latest_report(version) -> RegressionReport | None:
    if version is None:
        return None
    return version.reports.order_by("-created_at", "-pk").first()


def iteration_decide(*, iteration, by, verdict, comment="", report_hash=None) -> Decision:
    """Approve or reject the iteration's candidate on its latest report.

    ``report_hash``, when given (the page and API send the one the person
    read), must still be the latest report's: a report re-run in between
    means the decision would be made on evidence the person has not seen.
    A comment is required to reject and to approve past a failed gate.
    """
    comment = (comment or "").strip()
    if verdict not in Decision.Verdict.values:
        raise IterationError(
            f"Unknown verdict {verdict!r}; use {' or '.join(Decision.Verdict.values)}.",
            field="verdict",
        )
    with transaction.atomic():
        iteration = Iteration.objects.select_for_update().get(pk=iteration.pk)
        if iteration.status != Iteration.Status.READY:
            raise IterationError(
                f"This iteration is {iteration.get_status_display().lower()}: only an iteration "
                "whose candidate has a regression report can be decided."
            )
        version = iteration.candidate
        report = latest_report(version)
        if version is None or report is None or version.status != ModelVersion.Status.CANDIDATE:
            raise IterationError("The candidate has no regression report yet.")
        if report_hash and report_hash != report.content_hash:
            raise IterationError(
                "The regression report changed since you opened the page "
                f"(now {report.content_hash[:12]}); read the new one before deciding.",
                field="report_hash",
            )
        if verdict == Decision.Verdict.REJECT and not comment:
            raise IterationError("Say why you reject the candidate.", field="comment")
        if verdict == Decision.Verdict.APPROVE and not report.passed and not comment:
            raise IterationError(
                "A gate failed: explain in the comment why you approve anyway.", field="comment"
            )
        decision = Decision.objects.create(
            iteration=iteration,
            version=version,
            report=report,
            report_hash=report.content_hash,
            verdict=verdict,
            comment=comment,
            by=by,
        )
        approved = verdict == Decision.Verdict.APPROVE
        new_version_status = (
            ModelVersion.Status.APPROVED if approved else ModelVersion.Status.REJECTED
        )
        ModelVersion.objects.filter(pk=version.pk).update(status=new_version_status)
        audit_record(
            actor=by,
            action="model_version.status",
            project=iteration.project,
            target=version,
            before={"status": version.status},
            after={"status": new_version_status},
        )
        audit_record(
            actor=by,
            action=f"iteration.{verdict}",
            project=iteration.project,
            target=iteration,
            after={
                "version": version.number,
                "report": report.content_hash,
                "gates_passed": report.passed,
                "comment": comment,
            },
        )
        _set_status(
            iteration,
            Iteration.Status.APPROVED if approved else Iteration.Status.REJECTED,
            actor=by,
        )
    return decision


def iteration_abandon(*, iteration, by, comment="") -> Iteration:
    """Close the iteration undecided. A retrain still queued or running for
    it is cancelled: its version would otherwise become a candidate nobody
    is going to sign off."""
    with transaction.atomic():
        iteration = Iteration.objects.select_for_update().get(pk=iteration.pk)
        if iteration.status in (Iteration.Status.APPROVED, Iteration.Status.REJECTED):
            raise IterationError("A decided iteration stays as it was decided.")
        _set_status(iteration, Iteration.Status.ABANDONED, actor=by, comment=comment)
        running = TrainingJob.objects.filter(
            version__iteration=iteration,
            state__in=(TrainingJob.State.QUEUED, TrainingJob.State.RUNNING),
        ).select_related("project", "version")
        for job in running:
            training_cancel(job=job, by=by)
    return iteration


def _iteration_of(version):
    if version is None or version.iteration_id is None:
        return None
    return Iteration.objects.filter(pk=version.iteration_id, candidate_id=version.pk).first()


def _set_status(iteration, status, *, actor, candidate=None, comment=""):
    before = {"status": iteration.status}
    after = {"status": status}
    fields = {"status": status, "updated_at": timezone.now()}
    if candidate is not None:
        fields["candidate"] = candidate
        after["candidate"] = candidate.number
    if comment:
        after["comment"] = comment
    Iteration.objects.filter(pk=iteration.pk).update(**fields)
    for name, value in fields.items():
        setattr(iteration, name, value)
    audit_record(
        actor=actor,
        action="iteration.status",
        project=iteration.project,
        target=iteration,
        before=before,
        after=after,
    )

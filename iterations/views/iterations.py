"""Iteration pages: the backlog, a new iteration, and one iteration's page
(data diff, retrains and their live progress, the regression report, and the
product manager's sign-off)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labelling.permissions import get_project_for_user
from leanml_site.roles import Capability, role_can

from ..forms import AbandonForm, DecisionForm, IterationForm, RetrainForm
from ..models import Decision, Iteration, TrainingJob
from ..selectors import (
    iteration_attempts,
    iteration_data_diff,
    iteration_decisions,
    iteration_list,
    production_version,
)
from ..services.iterations import (
    IterationError,
    iteration_abandon,
    iteration_create,
    iteration_decide,
    iteration_retrain,
    latest_report,
)
from ..services.regression import SCORED_STATES, RegressionError, regression_request
from ..services.training import TrainingError, training_cancel
from .report import report_context

ACTIVE = (TrainingJob.State.QUEUED, TrainingJob.State.RUNNING)
PAST = {Decision.Verdict.APPROVE: "approved", Decision.Verdict.REJECT: "rejected"}
# After training, the page keeps polling for the regression report this long;
# a report that takes longer shows up on the next reload.
REPORT_WAIT_SECONDS = 600


def _get_iteration(request, project_pk, pk, *, capability=Capability.VIEW):
    project = get_project_for_user(request.user, project_pk, capability=capability)
    iteration = get_object_or_404(
        Iteration.objects.select_related("candidate", "opened_by"), project=project, pk=pk
    )
    iteration.project = project
    return project, iteration


def _detail_at(project, iteration, anchor):
    url = reverse("iterations:iteration_detail", args=[project.pk, iteration.pk])
    return redirect(f"{url}#{anchor}")


def _abilities(project):
    return {
        "can_train": role_can(project.role, Capability.TRAIN),
        "can_decide": role_can(project.role, Capability.DECIDE),
    }


@login_required
@require_GET
def iteration_list_view(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    iterations = list(iteration_list(project=project))
    open_states = {Iteration.Status.OPEN, Iteration.Status.TRAINING, Iteration.Status.READY}
    context = {
        "project": project,
        "iterations": iterations,
        "open_count": sum(1 for i in iterations if i.status in open_states),
        "production": production_version(project=project),
        **_abilities(project),
    }
    return render(request, "iterations/iteration_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def iteration_create_view(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    form = IterationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            iteration = iteration_create(project=project, by=request.user, **form.cleaned_data)
        except IterationError as error:
            form.add_error(error.field if error.field in form.fields else None, str(error))
        else:
            messages.success(request, f"Iteration “{iteration.title}” opened.")
            return redirect("iterations:iteration_detail", project.pk, iteration.pk)
    status = 400 if form.errors else 200
    return render(
        request, "iterations/iteration_form.html", {"project": project, "form": form}, status=status
    )


@login_required
@require_GET
def iteration_detail(request, project_pk, pk):
    project, iteration = _get_iteration(request, project_pk, pk)
    return _render_detail(request, project, iteration)


def _render_detail(request, project, iteration, *, decision_form=None, status=200):
    abilities = _abilities(project)
    report = latest_report(iteration.candidate)
    config = project.ensemble_configs.order_by("-number").first()
    attempts = list(iteration_attempts(iteration=iteration))
    jobs = [_job_context(project, iteration, v) for v in attempts]
    can_sign = (
        abilities["can_decide"]
        and report is not None
        and iteration.status == Iteration.Status.READY
    )
    if can_sign and decision_form is None:
        decision_form = DecisionForm(initial={"report_hash": report.content_hash})
    context = {
        "project": project,
        "iteration": iteration,
        "diff": iteration_data_diff(iteration=iteration),
        "jobs": jobs,
        "polling": any(j["polling"] for j in jobs),
        "retrain_form": RetrainForm(submodels=config.submodels if config else ()),
        "ensemble": config,
        "retrainable": iteration.status
        in (Iteration.Status.OPEN, Iteration.Status.READY, Iteration.Status.TRAINING),
        "report": report_context(report, project=project) if report else None,
        "can_rerun": abilities["can_train"]
        and iteration.candidate is not None
        and iteration.candidate.status in SCORED_STATES,
        "decision_form": decision_form if can_sign else None,
        "decisions": iteration_decisions(iteration=iteration),
        "can_abandon": (abilities["can_train"] or abilities["can_decide"])
        and iteration.status
        not in (Iteration.Status.APPROVED, Iteration.Status.REJECTED, Iteration.Status.ABANDONED),
        **abilities,
    }
    return render(request, "iterations/iteration_detail.html", context, status=status)


def _job_context(project, iteration, version):
    job = getattr(version, "job", None)
    active = job is not None and job.state in ACTIVE
    waiting = (
        job is not None
        and job.state == TrainingJob.State.SUCCEEDED
        and iteration.candidate_id == version.pk
        and iteration.status == Iteration.Status.TRAINING
        and job.finished_at is not None
        and (timezone.now() - job.finished_at).total_seconds() < REPORT_WAIT_SECONDS
    )
    return {
        "version": version,
        "job": job,
        "active": active,
        "waiting_for_report": waiting,
        "polling": active or waiting,
        "percent": round((job.progress if job else 0) * 100),
        "show_error": role_can(project.role, Capability.TRAIN),
    }


@login_required
@require_POST
def iteration_retrain_view(request, project_pk, pk):
    project, iteration = _get_iteration(request, project_pk, pk, capability=Capability.TRAIN)
    config = project.ensemble_configs.order_by("-number").first()
    form = RetrainForm(request.POST, submodels=config.submodels if config else ())
    if not form.is_valid():
        messages.error(request, " ".join(form.errors.get("refit", ["Choose sub-models."])))
        return _detail_at(project, iteration, "training")
    # Without a configuration yet, the first retrain chooses one and fits all of it.
    refit = form.cleaned_data["refit"] if config else None
    try:
        job = iteration_retrain(iteration=iteration, by=request.user, refit=refit)
    except (TrainingError, IterationError) as error:
        messages.error(request, str(error))
    else:
        job.refresh_from_db()
        if job.state == TrainingJob.State.FAILED:
            # The broker was unreachable: the job says so on the page.
            messages.error(request, f"Version {job.version.number} could not start: {job.message}")
        else:
            messages.success(request, f"Version {job.version.number} queued for training.")
    return _detail_at(project, iteration, "training")


@login_required
@require_GET
def job_progress(request, project_pk, pk, job_pk):
    """The progress partial htmx polls; once a polled job (or the report
    after it) is done, the whole page reloads to show the new state."""
    project, iteration = _get_iteration(request, project_pk, pk)
    job = get_object_or_404(
        TrainingJob.objects.select_related("version"), pk=job_pk, version__iteration=iteration
    )
    version = job.version
    version.job = job
    context = {
        "project": project,
        "iteration": iteration,
        **_job_context(project, iteration, version),
        **_abilities(project),
    }
    response = render(request, "iterations/partials/job_progress.html", context)
    if request.htmx and not context["polling"]:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def job_cancel(request, project_pk, pk, job_pk):
    project, iteration = _get_iteration(request, project_pk, pk, capability=Capability.TRAIN)
    job = get_object_or_404(
        TrainingJob.objects.select_related("project", "version"),
        pk=job_pk,
        version__iteration=iteration,
    )
    if job.state not in ACTIVE:
        messages.error(
            request, f"Version {job.version.number}'s training already ended ({job.state})."
        )
    else:
        job = training_cancel(job=job, by=request.user)
        messages.success(
            request,
            f"Version {job.version.number}: "
            + (
                "cancelled."
                if job.state == TrainingJob.State.CANCELLED
                else "cancel requested; it stops at its next step."
            ),
        )
    return _detail_at(project, iteration, "training")


@login_required
@require_POST
def iteration_decide_view(request, project_pk, pk):
    project, iteration = _get_iteration(request, project_pk, pk, capability=Capability.DECIDE)
    form = DecisionForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            decision = iteration_decide(
                iteration=iteration,
                by=request.user,
                verdict=data["verdict"],
                comment=data["comment"],
                report_hash=data["report_hash"],
            )
        except IterationError as error:
            field = error.field if error.field in form.fields else None
            if field == "report_hash":
                # The page now shows the newer report; the form carries its
                # hash, so a decision sent from it is a decision on that one.
                fresh = request.POST.copy()
                fresh["report_hash"] = latest_report(iteration.candidate).content_hash
                form = DecisionForm(fresh)
                form.is_valid()
                field = None  # a hidden field: say it above the form
            form.add_error(field, str(error))
        else:
            messages.success(
                request,
                f"Version {decision.version.number} {PAST[decision.verdict]} "
                f"on report {decision.report_hash[:12]}.",
            )
            # To the top, where the confirmation and the new status are
            # (a redirect without a fragment would keep the form's #signoff).
            return _detail_at(project, iteration, "top")
    iteration.refresh_from_db()
    iteration.project = project
    return _render_detail(request, project, iteration, decision_form=form, status=400)


@login_required
@require_POST
def iteration_abandon_view(request, project_pk, pk):
    project, iteration = _get_iteration(request, project_pk, pk)
    if not role_can(project.role, Capability.STEER):
        raise PermissionDenied(
            f"Your role ({project.role_label}) may not abandon iterations in this project."
        )
    form = AbandonForm(request.POST)
    comment = form.cleaned_data["comment"] if form.is_valid() else ""
    try:
        iteration_abandon(iteration=iteration, by=request.user, comment=comment)
    except IterationError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Iteration “{iteration.title}” abandoned.")
    return redirect("iterations:iteration_detail", project.pk, iteration.pk)


@login_required
@require_POST
def iteration_rerun_view(request, project_pk, pk):
    project, iteration = _get_iteration(request, project_pk, pk, capability=Capability.TRAIN)
    if iteration.candidate is None:
        messages.error(request, "There is no candidate to test yet.")
    else:
        try:
            regression_request(version=iteration.candidate, by=request.user)
        except RegressionError as error:
            # Not testable yet, or the task queue is unreachable: nothing was queued.
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                f"Regression test of version {iteration.candidate.number} queued; "
                "the new report appears here when it is written.",
            )
    return _detail_at(project, iteration, "report")

"""Import jobs (upload form, job page with live progress) and export downloads."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_http_methods

from leanml_site.roles import Capability, role_can

from ..models import ImportJob
from ..permissions import get_project_for_user
from ..services.exporting import FORMATS, export_stream
from ..services.importing import import_job_create, import_job_progress

EXPORT_LABELS = {"csv": "CSV", "jsonl": "JSON Lines", "label_studio": "Label Studio JSON"}


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="CSV, JSON (a list of objects), JSON Lines, or a Label Studio JSON export."
    )
    format = forms.ChoiceField(
        choices=[("", "Detect from the file name"), *ImportJob.Format.choices], required=False
    )
    policy = forms.ChoiceField(
        label="When an id is already in the project",
        choices=ImportJob.Policy.choices,
        initial=ImportJob.Policy.SKIP,
        widget=forms.RadioSelect,
    )
    id_column = forms.CharField(
        max_length=100,
        initial="id",
        help_text="The column holding each row's unique id (Label Studio: a key in “data”; "
        "without it the task id is used).",
    )
    label_column = forms.CharField(
        max_length=100,
        required=False,
        help_text="Optional: a column of existing labels (class names). Label Studio files "
        "take labels from their annotations instead.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def import_list(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    form = ImportForm()
    if request.method == "POST":
        project = get_project_for_user(request.user, project_pk, capability=Capability.IMPORT)
        form = ImportForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            job = import_job_create(
                project=project,
                by=request.user,
                uploaded_file=data["file"],
                fmt=data["format"] or None,
                policy=data["policy"],
                id_column=data["id_column"],
                label_column=data["label_column"],
            )
            # A failed job's page says what is wrong and where; no banner needed.
            if job.state == ImportJob.State.SUCCEEDED:
                # Imported, but with something to look at (a label-like column).
                notify = messages.warning if job.counts.get("warnings") else messages.success
                notify(request, job.message)
            return redirect(job)
    jobs = ImportJob.objects.filter(project=project).select_related("created_by")[:50]
    return render(
        request,
        "labelling/import_list.html",
        {
            "project": project,
            "form": form,
            "jobs": jobs,
            "can_import": role_can(project.role, Capability.IMPORT),
            "can_export": role_can(project.role, Capability.EXPORT),
            "export_formats": [(fmt, EXPORT_LABELS[fmt]) for fmt in FORMATS],
        },
    )


@login_required
@require_GET
def import_detail(request, project_pk, job_pk):
    project = get_project_for_user(request.user, project_pk)
    job = get_object_or_404(
        ImportJob.objects.select_related("created_by"), project=project, pk=job_pk
    )
    progress, message = import_job_progress(job)
    context = {
        "project": project,
        "job": job,
        "active": job.state in (ImportJob.State.QUEUED, ImportJob.State.RUNNING),
        "percent": round(progress * 100),
        "progress_message": message,
    }
    if request.htmx:
        return render(request, "labelling/partials/import_status.html", context)
    return render(request, "labelling/import_detail.html", context)


@login_required
@require_GET
def export(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.EXPORT)
    fmt = request.GET.get("format", "csv")
    try:
        result = export_stream(project=project, fmt=fmt)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(result.chunks, content_type=result.content_type)
    response["Content-Disposition"] = content_disposition_header(True, result.filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response

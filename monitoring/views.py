"""Pages for data scientists and owners: the project's API keys for machine
clients, and a file upload of prediction logs (the API's bulk path, by hand)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from labelling.permissions import get_project_for_user
from leanml_site.roles import Capability

from .forms import ApiKeyForm, PredictionUploadForm
from .models import ApiKey
from .services.api_keys import ApiKeyError, api_key_create, api_key_revoke
from .services.parsing import MAX_BODY_BYTES, IngestError, read_body
from .services.predictions import CSV_TEXT_COLUMNS, prediction_logs_ingest

UPLOAD_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


@login_required
@require_http_methods(["GET", "POST"])
def api_key_list(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    form = ApiKeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            key, full = api_key_create(project=project, by=request.user, **form.cleaned_data)
        except ApiKeyError as error:
            form.add_error(error.field, error.message)
        else:
            # Rendered in this response and never again: the secret is not stored.
            created = {"key": key, "full": full}
            form = ApiKeyForm()
    keys = ApiKey.objects.filter(project=project).select_related("created_by").order_by("-id")
    context = {"project": project, "form": form, "keys": keys, "created": created}
    return render(request, "monitoring/api_keys.html", context)


@login_required
@require_POST
def api_key_revoke_page(request, project_pk, pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    key = ApiKey.objects.filter(project=project, pk=pk).first()
    if key is None:
        raise Http404("No such API key.")
    key.project = project
    api_key_revoke(key=key, by=request.user)
    messages.success(request, f"Key “{key.name}” ({key.prefix}) is revoked.")
    return redirect("monitoring:api_key_list", project_pk=project.pk)


@login_required
@require_http_methods(["GET", "POST"])
def prediction_upload(request, project_pk):
    """A file of up to 100,000 prediction logs, stored all-or-nothing like
    one API request; larger files go through ``manage.py ingest_predictions``."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    form = PredictionUploadForm(request.POST or None, request.FILES or None)
    result = error = None
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        suffix = "." + upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
        fmt = UPLOAD_FORMATS.get(suffix)
        try:
            if fmt is None:
                raise IngestError(
                    f"Cannot tell the format of “{upload.name}”: name it .csv, .jsonl or .json.",
                    field="file",
                )
            if upload.size > MAX_BODY_BYTES:
                raise IngestError(
                    f"The file is {upload.size:,} bytes; the limit is {MAX_BODY_BYTES:,}.",
                    field="file",
                )
            frame = read_body(upload.read(), fmt, csv_text_columns=CSV_TEXT_COLUMNS)
            result = prediction_logs_ingest(project=project, frame=frame, fmt=fmt)
        except IngestError as exc:
            error = exc
    context = {"project": project, "form": form, "result": result, "error": error}
    return render(
        request, "monitoring/prediction_upload.html", context, status=400 if error else 200
    )

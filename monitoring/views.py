"""Pages for data scientists and owners: the project's API keys for machine
clients, and a file upload of prediction logs (the API's bulk path, by hand)."""

from collections import Counter
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, F, Max, Min, Q
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labelling.permissions import get_project_for_user
from leanml_site import textfiles
from leanml_site.roles import Capability, role_can
from ml.surfacing import DEFAULT_MIX, STRATEGIES

from .dashboard import page_context
from .forms import AlertAcknowledgeForm, ApiKeyForm, MonitoringSettingsForm, PredictionUploadForm
from .models import Alert, ApiKey, DriftCheck
from .services.alerts import AlertError, alert_acknowledge
from .services.api_keys import ApiKeyError, api_key_create, api_key_revoke
from .services.drift import monitoring_settings_get
from .services.parsing import MAX_BODY_BYTES, IngestError, cycle_collector_paused, read_body
from .services.predictions import CSV_TEXT_COLUMNS, prediction_logs_ingest
from .services.settings import EDITABLE as SETTINGS_EDITABLE
from .services.settings import (
    SettingsError,
    monitoring_settings_check,
    monitoring_settings_update,
)
from .tasks import DRIFT_WINDOW, drift_check_task

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
                # A binary file is said to be one, whatever its name.
                kind = textfiles.binary_kind(upload.read(textfiles.HEAD_BYTES))
                raise IngestError(
                    textfiles.not_text_message(upload.name, kind)
                    if kind
                    else f"Cannot tell the format of “{upload.name}”: name it .csv, .jsonl or "
                    ".json.",
                    field="file",
                )
            if upload.size > MAX_BODY_BYTES:
                raise IngestError(
                    f"The file is {upload.size:,} bytes; the limit is {MAX_BODY_BYTES:,}.",
                    field="file",
                )
            with cycle_collector_paused():
                frame = read_body(
                    upload.read(),
                    fmt,
                    csv_text_columns=CSV_TEXT_COLUMNS,
                    name=upload.name,
                    field="file",
                )
                result = prediction_logs_ingest(project=project, frame=frame, fmt=fmt)
        except IngestError as exc:
            error = exc
    context = {"project": project, "form": form, "result": result, "error": error}
    return render(
        request, "monitoring/prediction_upload.html", context, status=400 if error else 200
    )


# --- Surfacing and the queue ------------------------------------------------------------

QUEUE_TOP = 50
# How far one "up" / "down" moves a strategy's items: surfaced priorities
# lie in (0, 1.5), so one step puts a whole strategy ahead of (or behind)
# everything that was not moved.
PRIORITY_STEP = 1.0


@login_required
@require_http_methods(["GET", "POST"])
def surface_now(request, project_pk):
    """A data scientist's "surface now": budget and mix, queued to a worker."""
    from .forms_surfacing import SurfaceNowForm
    from .models import SurfacingRun
    from .services.surfacing import (
        SurfacingError,
        production_version,
        surfacing_request,
        surfacing_settings,
    )

    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    config = surfacing_settings(project)
    initial = {"budget": config.surfacing_budget, "since_days": 7}
    form = SurfaceNowForm(request.POST or None, initial=initial, mix=config.surfacing_mix)
    if request.method == "POST" and form.is_valid():
        since = timezone.now() - timedelta(days=form.cleaned_data["since_days"])
        try:
            run = surfacing_request(
                project=project,
                by=request.user,
                budget=form.cleaned_data["budget"],
                mix=form.mix(),
                since=since,
            )
        except SurfacingError as error:
            form.add_error("budget" if error.field == "budget" else None, error.message)
        else:
            return redirect("monitoring:surfacing_run", project_pk=project.pk, pk=run.pk)
    runs = SurfacingRun.objects.filter(project=project).select_related(
        "model_version", "requested_by"
    )[:20]
    context = {
        "project": project,
        "form": form,
        "runs": runs,
        "production": production_version(project),
    }
    return render(
        request,
        "monitoring/surface_now.html",
        context,
        status=400 if request.method == "POST" else 200,
    )


@login_required
@require_GET
def surfacing_run_detail(request, project_pk, pk):
    """A run's state (polled by htmx while it works) and what it surfaced."""
    from .models import SurfacingRun

    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    run = (
        SurfacingRun.objects.filter(project=project, pk=pk)
        .select_related("model_version", "requested_by")
        .first()
    )
    if run is None:
        raise Http404("No such surfacing run.")
    # By strategy, best first within each: scores of different strategies
    # are on different scales.
    surfaced = run.surfaced.select_related("sample", "prediction_log").order_by(
        "strategy", "-score"
    )
    surfaced = list(surfaced[:200]) if run.state == SurfacingRun.State.SUCCEEDED else []
    context = {"project": project, "run": run, "surfaced": surfaced}
    template = (
        "monitoring/partials/surfacing_run.html"
        if request.htmx
        else "monitoring/surfacing_run.html"
    )
    return render(request, template, context)


def _next_in_line(project):
    """The open items annotators get next, highest priority first."""
    from labelling.models import QueueItem

    return list(
        QueueItem.objects.filter(project=project, state=QueueItem.State.OPEN)
        .select_related("sample")
        .order_by("-priority", "id")[:QUEUE_TOP]
    )


def _queue_context(project):
    from labelling.models import QueueItem

    from .forms_surfacing import STRATEGY_HELP

    # Held items (their sample is flagged) are counted apart: nobody is given
    # them until the flags are resolved, so they are not part of the mix.
    held_state = Q(state=QueueItem.State.HELD)
    rows = list(
        QueueItem.objects.filter(project=project, state__in=QueueItem.QUEUED)
        .values("strategy")
        .annotate(
            n=Count("id", filter=~held_state),
            held=Count("id", filter=held_state),
            top=Max("priority"),
            low=Min("priority"),
        )
        # In the order annotators meet them: the strategy whose best item
        # comes first is on top, so moving one up moves its row.
        .order_by(F("top").desc(nulls_last=True), "strategy")
    )
    total = sum(r["n"] for r in rows)
    held = sum(r["held"] for r in rows)
    items = _next_in_line(project)
    next_in_line = Counter(item.strategy for item in items)
    for row in rows:
        row["share"] = row["n"] / total if total else 0
        row["help"] = STRATEGY_HELP.get(row["strategy"], "")
        row["next"] = next_in_line[row["strategy"]]
    return {
        "project": project,
        "mix": rows,
        "total": total,
        "held": held,
        "items": items,
        "queue_top": QUEUE_TOP,
    }


@login_required
@require_GET
def queue_overview(request, project_pk):
    """The open labelling queue: its mix by strategy and the items next in line."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    context = _queue_context(project)
    context["can_reprioritise"] = role_can(project.role, Capability.QUEUE)
    return render(request, "monitoring/queue.html", context)


@login_required
@require_POST
def queue_strategy_priority(request, project_pk):
    from labelling.services.queue import queue_strategy_reprioritise

    from .forms_surfacing import StrategyPriorityForm

    project = get_project_for_user(request.user, project_pk, capability=Capability.QUEUE)
    form = StrategyPriorityForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("strategy and direction (up or down) are required.")
    strategy = form.cleaned_data["strategy"]
    delta = PRIORITY_STEP if form.cleaned_data["direction"] == "up" else -PRIORITY_STEP
    moved = queue_strategy_reprioritise(
        project=project, strategy=strategy, delta=delta, by=request.user
    )
    if moved:
        where = "up" if delta > 0 else "down"
        ahead = _next_in_line(project)
        among = sum(item.strategy == strategy for item in ahead)
        messages.success(
            request,
            f"{moved} “{strategy}” item{pluralize(moved)} moved {where} by {PRIORITY_STEP:g}: "
            f"{among} of the next {len(ahead)} in line {pluralize(among, 'is,are')} “{strategy}”.",
        )
    else:
        messages.error(request, f"No open item has the strategy “{strategy}”.")
    return redirect("monitoring:queue", project_pk=project.pk)


@login_required
@require_POST
def queue_item_priority(request, project_pk, pk):
    from labelling.models import QueueItem
    from labelling.services.queue import queue_item_update

    from .forms_surfacing import ItemPriorityForm

    project = get_project_for_user(request.user, project_pk, capability=Capability.QUEUE)
    item = QueueItem.objects.filter(project=project, pk=pk, state__in=QueueItem.QUEUED).first()
    if item is None:
        raise Http404("No such open or held queue item.")
    form = ItemPriorityForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            f"Priority of {item.sample.external_id}: {' '.join(form.errors.get('priority', []))} "
            "Nothing was changed.",
        )
        return redirect("monitoring:queue", project_pk=project.pk)
    queue_item_update(item=item, by=request.user, priority=form.cleaned_data["priority"])
    messages.success(
        request, f"{item.sample.external_id} now has priority {form.cleaned_data['priority']:g}."
    )
    return redirect("monitoring:queue", project_pk=project.pk)


# --- Drift alerts and the monitoring settings -------------------------------------------


# Who may acknowledge an alert: whoever acts on a model, by training it (data
# scientists) or by deciding on it (product managers); owners do both.
def _may_acknowledge(project):
    return role_can(project.role, Capability.STEER)


@login_required
@require_GET
def alert_list(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    alerts = Alert.objects.filter(project=project).select_related(
        "acknowledged_by", "drift_check__model_version"
    )
    context = {
        "project": project,
        "open_alerts": alerts.filter(acknowledged_at__isnull=True).order_by("-window_end", "id"),
        "acknowledged": alerts.filter(acknowledged_at__isnull=False).order_by("-acknowledged_at")[
            :100
        ],
        "may_acknowledge": _may_acknowledge(project),
        "may_check": role_can(project.role, Capability.TRAIN),
        "last_check": DriftCheck.objects.filter(project=project)
        .select_related("model_version")
        .order_by("-created_at")
        .first(),
        "form": AlertAcknowledgeForm(),
    }
    return render(request, "monitoring/alerts.html", context)


@login_required
@require_POST
def alert_acknowledge_page(request, project_pk, pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    if not _may_acknowledge(project):
        raise PermissionDenied(
            f"Your role ({project.role_label}) may not acknowledge alerts in this project."
        )
    alert = Alert.objects.filter(project=project, pk=pk).first()
    if alert is None:
        raise Http404("No such alert.")
    alert.project = project
    form = AlertAcknowledgeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect("monitoring:alert_list", project_pk=project.pk)
    try:
        alert_acknowledge(alert=alert, by=request.user, note=form.cleaned_data["note"])
    except AlertError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Acknowledged: {alert.sentence}")
    return redirect("monitoring:alert_list", project_pk=project.pk)


@login_required
@require_POST
def drift_check_now(request, project_pk):
    """Queue a drift check of the last day's logs (the daily beat job, now)."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    end = timezone.now()
    start = end - DRIFT_WINDOW
    transaction.on_commit(
        lambda: drift_check_task.delay(
            project_id=project.pk, window_start=start.isoformat(), window_end=end.isoformat()
        )
    )
    messages.success(
        request,
        f"Drift check of {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC queued; "
        "new alerts appear here when it has run.",
    )
    return redirect("monitoring:alert_list", project_pk=project.pk)


def _settings_errors_to_form(form, error):
    """The service's problems, each beside the form field it is about; a
    problem of the mix as a whole goes above the mix's fields."""
    for key, text in error.problems:
        setting, _, strategy = key.partition(".")
        name = f"mix_{strategy}" if strategy else setting
        if name in form.fields:
            if name not in form.errors:  # a field's own "Enter a number." stays first
                form.add_error(name, text[:1].upper() + text[1:])
        else:
            form.add_error(None, f"Mix: {text}" if setting == "surfacing_mix" else text)


@login_required
@require_http_methods(["GET", "POST"])
def monitoring_settings_page(request, project_pk):
    """Everyone in the project reads the settings; data scientists and owners change them."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    may_edit = role_can(project.role, Capability.TRAIN)
    row = monitoring_settings_get(project)
    initial = {name: getattr(row, name) for name in SETTINGS_EDITABLE if name != "surfacing_mix"}
    mix = row.surfacing_mix or DEFAULT_MIX
    initial.update({f"mix_{s}": mix.get(s) for s in STRATEGIES})
    status = 200
    if request.method == "POST":
        if not may_edit:
            raise PermissionDenied(
                f"Your role ({project.role_label}) may not change the monitoring settings."
            )
        form = MonitoringSettingsForm(request.POST, strategies=STRATEGIES)
        try:
            if form.is_valid():
                monitoring_settings_update(project=project, by=request.user, changes=form.changes())
                messages.success(request, "Monitoring settings saved.")
                return redirect("monitoring:settings", project_pk=project.pk)
            # The values that are numbers still get the service's range
            # checks, so every bad field is named at once.
            monitoring_settings_check(form.changes())
        except SettingsError as error:
            _settings_errors_to_form(form, error)
        status = 400
    else:
        form = MonitoringSettingsForm(initial=initial, strategies=STRATEGIES)
    if not may_edit:
        for field in form.fields.values():
            field.disabled = True
    context = {
        "project": project,
        "form": form,
        "may_edit": may_edit,
        "default_mix": not row.surfacing_mix,
    }
    return render(request, "monitoring/settings.html", context, status=status)


@login_required
@require_GET
def monitoring_page(request, project_pk):
    """Metrics over time from the stored windows (never the logs themselves),
    filtered by model version, segment and granularity."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    context = {"project": project, **page_context(project, request.GET)}
    status = 400 if context["filters"].errors else 200
    return render(request, "monitoring/monitoring.html", context, status=status)


# The suspects listed (best first), and how many a page shows.
LABEL_ERRORS_LIMIT = 200
LABEL_ERRORS_PER_PAGE = 20


@login_required
@require_GET
def label_error_list(request, project_pk):
    """Labels the production model's out-of-fold probabilities contradict, for
    an expert or owner to settle (never sent back to the queue)."""
    from labelling.models import LabelClass

    from .services.label_errors import LabelErrorsUnavailable, label_error_suspects

    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    version, suspects, problem = None, [], None
    try:
        version, suspects = label_error_suspects(project=project, limit=LABEL_ERRORS_LIMIT)
    except LabelErrorsUnavailable as error:
        problem = error.message
    # A page past the last (the list shrinks as suspects are settled) shows the last.
    page = Paginator(suspects, LABEL_ERRORS_PER_PAGE).get_page(request.GET.get("page"))
    for suspect in page.object_list:
        # Not judged by the person who gave the label.
        suspect.mine = request.user.pk in suspect.labelled_by
        # What the expert judges: the sample as the review page shows it.
        suspect.text, suspect.fields = project.text_and_fields(suspect.sample.data)
    context = {
        "project": project,
        "version": version,
        "suspects": page.object_list,
        "page": page,
        "total": len(suspects),
        "limit": LABEL_ERRORS_LIMIT,
        "problem": problem,
        "can_adjudicate": role_can(project.role, Capability.ADJUDICATE),
        "label_classes": LabelClass.objects.filter(project=project).order_by("order", "id"),
    }
    return render(request, "monitoring/label_errors.html", context)

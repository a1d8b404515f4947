"""The samples browser, the sample page and cleaning (corrections, flags, duplicates)."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from leanml_site.roles import Capability, role_can

from ..limits import MAX_NOTE_CHARS
from ..models import Flag, Sample
from ..permissions import get_project_for_user, get_sample_for_user
from ..selectors import FLAG_ANY, FLAG_NONE, LABEL_NONE, duplicate_groups, sample_browse
from ..selectors import sample_history as select_sample_history
from ..services.cleaning import CleaningError, duplicates_merge, flag_resolve, sample_flag
from ..services.cleaning import sample_revise as revise_sample
from .labelling import flag_refused

PAGE_SIZE = 50


class SampleFilterForm(forms.Form):
    """The browser's filters, read from GET parameters (the API shares the names)."""

    q = forms.CharField(label="Search", required=False, max_length=200)
    label = forms.ChoiceField(label="Label", required=False)
    consensus_state = forms.ChoiceField(
        label="Consensus", required=False, choices=[("", "Any")] + Sample.Consensus.choices
    )
    flag = forms.ChoiceField(
        label="Flags",
        required=False,
        choices=[("", "Any"), (FLAG_ANY, "Has an open flag"), (FLAG_NONE, "No open flag")]
        + Flag.Kind.choices,
    )
    split = forms.ChoiceField(
        label="Split", required=False, choices=[("", "Any")] + Sample.Split.choices
    )
    source = forms.ChoiceField(
        label="Source", required=False, choices=[("", "Any")] + Sample.Source.choices
    )
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any")] + Sample.Status.choices
    )
    annotator = forms.TypedChoiceField(label="Labelled by", required=False, coerce=int)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    before = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args, project, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["label"].choices = [
            ("", "Any"),
            (LABEL_NONE, "No consensus label"),
            *[(str(c.pk), c.name) for c in project.label_classes.all()],
        ]
        self.fields["annotator"].choices = [("", "Anyone")] + [
            (m.user_id, m.user.get_username())
            for m in project.memberships.select_related("user").order_by("user__username")
        ]

    def filters(self):
        return {k: v for k, v in self.cleaned_data.items() if k not in {"after", "before"}}


def _query(params, **changes):
    """The current GET parameters with ``changes`` applied (None removes a key)."""
    query = params.copy()
    for key, value in changes.items():
        query.pop(key, None)
        if value is not None:
            query[key] = value
    return "?" + query.urlencode() if query else "?"


@login_required
def sample_list(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    form = SampleFilterForm(request.GET or None, project=project)
    page = None
    if not request.GET or form.is_valid():
        data = form.cleaned_data if form.is_bound else {}
        page = sample_browse(
            project=project,
            filters=form.filters() if form.is_bound else {},
            after=data.get("after"),
            before=data.get("before"),
            limit=PAGE_SIZE,
        )
    context = {
        "project": project,
        "form": form,
        "page": page,
        "filtered": any(v for k, v in request.GET.items() if k not in {"after", "before"}),
        "next_query": page
        and page.has_next
        and _query(request.GET, after=page.next_after, before=None),
        "prev_query": page
        and page.has_previous
        and _query(request.GET, before=page.prev_before, after=None),
        "can_clean": role_can(project.role, Capability.CLEAN),
    }
    # htmx swaps just the results; a history restore or a plain request gets the page.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "labelling/partials/sample_table.html" if partial else "labelling/sample_list.html"
    response = render(request, template, context, status=200 if page is not None else 400)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _field_rows(sample, project):
    kinds = {f["name"]: f.get("kind", "text") for f in project.fields}
    names = [f["name"] for f in project.fields if f["name"] in sample.data]
    names += [name for name in sample.data if name not in kinds]
    configured_missing = [f["name"] for f in project.fields if f["name"] not in sample.data]
    return [
        {
            "name": name,
            "kind": kinds.get(name, "text"),
            "value": sample.data.get(name),
            "missing": name not in sample.data,
            "long": isinstance(sample.data.get(name), str) and len(sample.data[name]) > 80,
        }
        for name in names + configured_missing
    ]


def _render_sample(request, sample, *, status=200, revise_error=None):
    project = sample.project
    history = select_sample_history(sample=sample)
    fields = _field_rows(sample, project)
    if revise_error is not None:
        revise_error["shown"] = any(f["name"] == revise_error["field"] for f in fields)
    context = {
        "project": project,
        "sample": sample,
        "fields": fields,
        "consensus_label": sample.consensus_label,
        "can_clean": role_can(project.role, Capability.CLEAN),
        "flag_kinds": Flag.Kind.choices,
        "open_flags": [f for f in history["flags"] if f.resolved_at is None],
        "revise_error": revise_error,
        "max_note_chars": MAX_NOTE_CHARS,
        **history,
    }
    return render(request, "labelling/sample_detail.html", context, status=status)


@login_required
def sample_detail(request, project_pk, sample_pk):
    sample = get_sample_for_user(request.user, project_pk, sample_pk)
    return _render_sample(request, sample)


@login_required
@require_POST
def sample_revise(request, project_pk, sample_pk):
    sample = get_sample_for_user(request.user, project_pk, sample_pk, capability=Capability.CLEAN)
    name = request.POST.get("field", "")
    value = request.POST.get("value", "")
    current = sample.data.get(name)
    # Browsers send textarea line breaks as CRLF; keep the stored convention
    # so an untouched text is not mistaken for a change.
    if isinstance(current, str) and "\r" not in current:
        value = value.replace("\r\n", "\n")
    note = request.POST.get("note", "").strip()
    try:
        revision = revise_sample(sample=sample, by=request.user, changes={name: value}, note=note)
    except CleaningError as exc:
        error = {
            "field": name,
            "value": value,
            "note": note,
            "message": str(exc),
            "on_note": exc.field == "note",
        }
        return _render_sample(request, sample, status=400, revise_error=error)
    messages.success(request, f"“{name}” corrected: saved as revision {revision.number}.")
    return redirect(sample)


def _next_url(request, default):
    candidate = request.POST.get("next") or request.GET.get("next")
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


@login_required
@require_POST
def sample_flag_view(request, project_pk, sample_pk):
    """Flag a sample. Also the target of the labelling page's ``f`` key: it posts
    ``kind``, ``note``, ``duplicate_of`` (an external id) and ``next``."""
    sample = get_sample_for_user(request.user, project_pk, sample_pk, capability=Capability.CLEAN)
    next_url = _next_url(request, sample.get_absolute_url())
    kind = request.POST.get("kind", "")
    note = request.POST.get("note", "").strip()
    duplicate_of = None
    external_id = request.POST.get("duplicate_of", "").strip()
    try:
        if external_id:
            duplicate_of = Sample.objects.filter(
                project=sample.project, external_id=external_id
            ).first()
            if duplicate_of is None:
                raise CleaningError(
                    f"No sample with id '{external_id}' in this project.", field="duplicate_of"
                )
        flag = sample_flag(
            sample=sample,
            by=request.user,
            kind=kind,
            note=note,
            duplicate_of=duplicate_of,
        )
    except CleaningError as exc:
        if request.POST.get("from") == "label":
            return flag_refused(request, sample, exc, request.POST)
        messages.error(request, f"Not flagged: {exc}")
    else:
        messages.success(
            request,
            f"Sample “{sample.external_id}” flagged as {flag.get_kind_display().lower()}; "
            "it is excluded from training until the flag is resolved.",
        )
    return redirect(next_url)


@login_required
@require_POST
def flag_resolve_view(request, project_pk, sample_pk, flag_pk):
    sample = get_sample_for_user(request.user, project_pk, sample_pk, capability=Capability.CLEAN)
    flag = get_object_or_404(Flag, sample=sample, pk=flag_pk)
    try:
        flag_resolve(flag=flag, by=request.user, resolution=request.POST.get("resolution", ""))
    except CleaningError as exc:
        messages.error(request, f"Flag not resolved: {exc}")
    else:
        sample.refresh_from_db(fields=["status"])
        messages.success(
            request,
            f"Flag resolved; the sample is {sample.get_status_display().lower()}.",
        )
    return redirect(_next_url(request, sample.get_absolute_url()))


@login_required
def duplicates(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    groups = duplicate_groups(project=project)
    return render(
        request,
        "labelling/duplicates.html",
        {
            "project": project,
            "groups": groups,
            "can_clean": role_can(project.role, Capability.CLEAN),
        },
    )


@login_required
@require_POST
def duplicates_merge_view(request, project_pk):
    """Keep one sample of an exact-duplicate group and flag every other active
    sample with the same content hash as its duplicate."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.CLEAN)
    back = reverse("labelling:duplicates", args=[project.pk])
    keep = Sample.objects.filter(project=project, pk=_int(request.POST.get("keep"))).first()
    content_hash = request.POST.get("content_hash", "")
    if keep is None:
        messages.error(request, "Choose the sample to keep.")
        return redirect(back)
    if keep.content_hash != content_hash or keep.status != Sample.Status.ACTIVE:
        messages.error(
            request,
            f"Sample “{keep.external_id}” is no longer an active member of this group "
            "(it was edited or flagged); reload and choose again.",
        )
        return redirect(back)
    others = Sample.objects.filter(
        project=project, content_hash=content_hash, status=Sample.Status.ACTIVE
    ).exclude(pk=keep.pk)
    try:
        flags = duplicates_merge(project=project, by=request.user, keep=keep, duplicates=others)
    except CleaningError as exc:
        messages.error(request, f"Not merged: {exc}")
    else:
        messages.success(
            request,
            f"Kept “{keep.external_id}”; {len(flags)} duplicate(s) flagged and excluded "
            "from training.",
        )
    return redirect(back)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

"""The keyboard-first labelling page.

With JavaScript the page keeps the following card ready (a second lease taken
with ``queue_next(exclude_item_ids=[card on screen])``), swaps it in the
moment a key is pressed and posts the label in the background; each submit
answers with the card after that. Without JavaScript every card is a plain
form whose buttons post and redirect back (post/redirect/get).
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET, require_POST

from leanml_site.roles import Capability

from ..limits import MAX_NOTE_CHARS
from ..models import Annotation, Flag, Lease, QueueItem, Sample
from ..permissions import get_project_for_user
from ..services.annotations import AnnotationError, annotation_last, annotation_submit
from ..services.projects import RESERVED_HOTKEYS
from ..services.queue import annotator_progress, lease_release, queue_next

# The flag form's inputs, each of which shows its own error.
FLAG_FIELDS = ("kind", "duplicate_of", "note")


def _ints(values):
    out = []
    for value in values:
        for part in str(value).split(","):
            if part.strip().isdigit():
                out.append(int(part))
    return out


def label_buttons(project):
    """Each label class with the keys that choose it: its hotkey, then its
    number (1-9 by position) when no class claims that number as a hotkey."""
    classes = list(project.label_classes.all())
    hotkeys = {
        c.hotkey.lower() for c in classes if c.hotkey and c.hotkey.lower() not in RESERVED_HOTKEYS
    }
    buttons = []
    for index, label_class in enumerate(classes):
        keys = []
        hotkey = label_class.hotkey.lower()
        if hotkey and hotkey not in RESERVED_HOTKEYS:
            keys.append(hotkey)
        digit = str(index + 1)
        if index < 9 and digit not in hotkeys and digit not in keys:
            keys.append(digit)
        buttons.append({"label": label_class, "keys": keys, "key": keys[0] if keys else ""})
    return buttons


def _fields(project, sample):
    shown = project.shown_fields or [{"name": name, "kind": "text"} for name in sample.data]
    return [
        {
            "name": spec["name"],
            "kind": spec.get("kind", "text"),
            "value": sample.data.get(spec["name"]),
        }
        for spec in shown
    ]


def _flag_url(project, sample):
    # The flag view belongs to the cleaning pages; until it is routed the
    # card simply offers no flag form.
    try:
        return reverse("labelling:sample_flag", args=[project.pk, sample.pk])
    except NoReverseMatch:
        return None


def _can_undo(project, user):
    """Whether "undo" has an answer to go back to (what ``annotation_last`` finds)."""
    return Annotation.objects.filter(
        project=project, annotator=user, origin=Annotation.Origin.HUMAN
    ).exists()


def _card_context(request, project, *, lease=None, relabel=None, sample=None, can_undo=False):
    """The card of the lease's sample, the relabelled one, or (``sample``)
    that sample as the annotator holds it: by its lease, else as a relabel.
    ``can_undo=True`` when the caller knows the annotator has an answer (one
    was just recorded): it spares the submit round trip a query."""
    if sample is not None:
        lease = (
            Lease.objects.filter(user=request.user, item__sample=sample)
            .select_related("item__sample")
            .first()
        )
        if lease is None:
            relabel = (
                Annotation.objects.filter(
                    sample=sample, annotator=request.user, origin=Annotation.Origin.HUMAN
                )
                .select_related("sample", "label")
                .order_by("-id")
                .first()
            )
    context = {
        "project": project,
        "buttons": label_buttons(project),
        "progress": annotator_progress(project=project, user=request.user),
        "sample": None,
        "item": None,
        "relabel": relabel,
        "can_undo": can_undo or relabel is not None or _can_undo(project, request.user),
    }
    if relabel is not None:
        sample = relabel.sample
        item = QueueItem.objects.filter(sample=sample).order_by("-id").first()
    elif lease is not None:
        sample, item = lease.item.sample, lease.item
    elif sample is not None:
        # Neither leased nor answered (the lease lapsed): the card still shows it.
        item = QueueItem.objects.filter(sample=sample).order_by("-id").first()
    else:
        return context
    label_url = reverse("labelling:label", args=[project.pk])
    context.update(
        sample=sample,
        item=item,
        lease=lease,
        fields=_fields(project, sample),
        flag_url=_flag_url(project, sample),
        flag_kinds=Flag.Kind.choices,
        flag_fields=FLAG_FIELDS,
        flag_next=f"{label_url}?{urlencode({'after_flag': sample.pk})}",
        max_note_chars=MAX_NOTE_CHARS,
    )
    return context


def flag_refused(request, sample, error, form):
    """A flag sent from the labelling page and refused: the same sample's card
    again, its flag form open with what was sent and ``error`` at the field at
    fault (``error.field``), status 400. The page stays on the sample; the
    script swaps this card in, a plain form post gets the whole page."""
    project = sample.project
    context = _card_context(request, project, sample=sample)
    context["flag_form"] = {
        "kind": form.get("kind", ""),
        "duplicate_of": form.get("duplicate_of", ""),
        "note": form.get("note", ""),
        "field": error.field,
        "error": f"Not flagged: {error}",
    }
    if request.htmx:
        return _render_card(request, context, status=400)
    context["label_classes"] = [b["label"] for b in context["buttons"]]
    return render(request, "labelling/label.html", context, status=400)


def _after_flag(request, project):
    """Move past a sample the annotator has just flagged (the flag form's ``next``).

    Only when the flag exists (the flag view may have refused it: then the
    annotator stays on the sample and sees why) and the annotator has not
    answered the sample and either raised an open flag on it (raising it
    released their lease: ``queue_hold``) or still holds its lease: their
    turn is recorded as a skip, so once the flag is resolved the sample goes
    to someone else and they do not get it again.
    """
    sample_pks = _ints([request.GET.get("after_flag", "")])
    if not sample_pks:
        return
    sample = Sample.objects.filter(project=project, pk=sample_pks[0]).first()
    if sample is None:
        return
    open_flags = Flag.objects.filter(sample=sample, resolved_at__isnull=True)
    if not open_flags.exists():
        return
    if Annotation.objects.filter(sample=sample, annotator=request.user).exists():
        return
    if (
        not open_flags.filter(created_by=request.user).exists()
        and not Lease.objects.filter(user=request.user, item__sample=sample).exists()
    ):
        return
    annotation_submit(project=project, user=request.user, sample=sample, skip=True)


def _render_card(request, context, *, status=200):
    return render(request, "labelling/partials/label_card_response.html", context, status=status)


@login_required
@require_GET
def label(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.LABEL)
    _after_flag(request, project)
    relabel = None
    if request.GET.get("undo"):
        relabel = annotation_last(project=project, user=request.user)
        if relabel is None:
            messages.info(request, "Nothing to undo yet: you have not labelled anything here.")
    lease = None if relabel else queue_next(project=project, user=request.user)
    context = _card_context(request, project, lease=lease, relabel=relabel)
    context["label_classes"] = [b["label"] for b in context["buttons"]]
    return render(request, "labelling/label.html", context)


@login_required
@require_GET
def label_card(request, project_pk):
    """The card partial: the next sample (``exclude`` = cards the page already
    holds), the last-labelled sample again (``undo=1``), or, with ``card=0``,
    only the progress and messages."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.LABEL)
    _after_flag(request, project)
    if request.GET.get("undo"):
        relabel = annotation_last(project=project, user=request.user)
        if relabel is None:
            return HttpResponse(status=204)
        return _render_card(request, _card_context(request, project, relabel=relabel))
    if request.GET.get("card") == "0":
        context = _card_context(request, project)
        context["no_card"] = True
        return _render_card(request, context)
    lease = queue_next(
        project=project,
        user=request.user,
        exclude_item_ids=_ints(request.GET.getlist("exclude")),
    )
    return _render_card(request, _card_context(request, project, lease=lease))


@login_required
@require_POST
def label_submit(request, project_pk):
    """Record a label or a skip. htmx/JS: answer with the next card (``want_card``)
    or only the progress; a plain form post redirects back to the page."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.LABEL)
    sample_pks = _ints([request.POST.get("sample", "")])
    sample = (
        Sample.objects.filter(project=project, pk=sample_pks[0]).first() if sample_pks else None
    )
    if sample is None:
        raise Http404("No such sample in this project.")
    try:
        annotation_submit(
            project=project,
            user=request.user,
            sample=sample,
            label=request.POST.get("label") or None,
            skip=bool(request.POST.get("skip")),
            seconds=request.POST.get("seconds") or None,
        )
    except AnnotationError as exc:
        if request.htmx:
            return HttpResponse(f"Not saved: {exc}", status=400, content_type="text/plain")
        messages.error(request, f"Not saved: {exc}")
        return redirect("labelling:label", project.pk)
    if not request.htmx:
        return redirect("labelling:label", project.pk)
    if request.POST.get("want_card"):
        lease = queue_next(
            project=project,
            user=request.user,
            exclude_item_ids=_ints(request.POST.getlist("exclude")),
        )
        return _render_card(request, _card_context(request, project, lease=lease, can_undo=True))
    context = _card_context(request, project, can_undo=True)
    context["no_card"] = True
    return _render_card(request, context)


@login_required
@require_POST
def label_release(request, project_pk):
    """Give back the leases of cards the page held (the annotator left it)."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.LABEL)
    items = QueueItem.objects.filter(project=project, pk__in=_ints(request.POST.getlist("item")))
    released = sum(
        lease_release(project=project, user=request.user, item=item) for item in items[:10]
    )
    return HttpResponse(f"{released} released", content_type="text/plain")

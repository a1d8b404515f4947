"""The review page (settle disputed samples) and the agreement page."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from leanml_site.roles import Capability, role_can

from ..limits import MAX_NOTE_CHARS
from ..models import LabelClass, Sample
from ..permissions import get_project_for_user, get_sample_for_user
from ..selectors_agreement import (
    REVIEW_STATES,
    current_labels_for,
    project_agreement,
    review_counts,
    review_page,
)
from ..services.review import LABEL_ERROR_REVIEW, sample_adjudicate

PAGE_SIZE = 25
MAX_PAIRS = 30


def can_mark_gold(project) -> bool:
    # A gold answer becomes a reference for everyone's labels: owners set them.
    return role_can(project.role, Capability.MANAGE)


@login_required
def review(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    after = request.GET.get("after") or ""
    page = review_page(project=project, after=after, size=PAGE_SIZE)
    context = {
        "project": project,
        "rows": _rows(project, page.samples, request.user),
        "page": page,
        "after": after,
        "max_note_chars": MAX_NOTE_CHARS,
        "counts": _count_pills(page.counts),
        "total": sum(page.counts.values()),
        **_abilities(project),
    }
    return render(request, "labelling/review.html", context)


@login_required
@require_POST
def adjudicate(request, project_pk, sample_pk):
    sample = get_sample_for_user(
        request.user, project_pk, sample_pk, capability=Capability.ADJUDICATE
    )
    project = sample.project
    gold = request.POST.get("gold") in {"1", "on", "true"}
    if gold and not can_mark_gold(project):
        raise PermissionDenied("Only owners mark an answer as gold.")
    after = request.POST.get("after", "")
    error = error_field = adjudication = None
    note = request.POST.get("note", "")
    # A suspected label error (monitoring's list) is settled by someone who
    # did not give the sample a label: the service refuses it otherwise.
    label_error = request.POST.get("review") == LABEL_ERROR_REVIEW
    label = _label_from(project, request.POST.get("label", ""))
    if isinstance(label, str):
        error = label
    else:
        try:
            adjudication = sample_adjudicate(
                sample=sample,
                by=request.user,
                label=label,
                note=note,
                gold=gold,
                review=LABEL_ERROR_REVIEW if label_error else None,
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
            error_field = next(iter(getattr(exc, "error_dict", {})), None)

    if request.htmx:
        row = _rows(project, [sample], request.user)[0]
        row.update(
            error=error,
            error_field=error_field,
            adjudication=adjudication,
            # A refused answer keeps the note that was typed.
            note=note if error else "",
        )
        context = {
            "project": project,
            "row": row,
            "after": after,
            "max_note_chars": MAX_NOTE_CHARS,
            # The counts above the list change too; htmx swaps them out of band.
            "counts": _count_pills(review_counts(project=project)),
            **_abilities(project),
        }
        return render(request, "labelling/partials/review_result.html", context)

    if label_error:
        if error:
            messages.error(request, f"Sample {sample.external_id}: {error}")
        else:
            messages.success(
                request,
                f"Sample {sample.external_id} settled as “{adjudication.label.name}”.",
            )
        # Back to the page of the list the form was on (a number, nothing else).
        list_page = request.POST.get("page", "")
        url = reverse("monitoring:label_errors", args=[project.pk])
        return redirect(f"{url}?page={list_page}" if list_page.isdigit() else url)
    if error:
        messages.error(request, f"Sample {sample.external_id}: {error}")
    else:
        mine = _rows(project, [sample], request.user)[0]["mine"]
        messages.success(
            request,
            f"Sample {sample.external_id} settled as “{adjudication.label.name}”"
            + (" (gold)." if adjudication.gold else ".")
            + (
                f" You had labelled it “{mine.label_name}” yourself."
                if mine and mine.label_id
                else ""
            ),
        )
    url = reverse("labelling:review", args=[project.pk])
    return redirect(f"{url}?{urlencode({'after': after})}" if after else url)


@login_required
def agreement(request, project_pk):
    project = get_project_for_user(request.user, project_pk)
    report = project_agreement(project=project)
    colours = dict(project.label_classes.values_list("name", "colour"))
    confusion = None
    if report.confusion is not None:
        confusion = [
            {
                "name": name,
                "colour": colours.get(name, ""),
                "cells": [
                    {"n": n, "diagonal": i == j} for j, n in enumerate(report.confusion.counts[i])
                ],
                "specific": report.confusion.specific_agreement[i],
            }
            for i, name in enumerate(report.confusion.classes)
        ]
    # Many annotators make many pairs; the pairs that share most samples say most.
    pairs = sorted(report.pairs, key=lambda p: (-p.items, str(p.a), str(p.b)))
    context = {
        "project": project,
        "report": report,
        "metrics": _metric_cards(report),
        "confusion": confusion,
        "pairs": pairs[:MAX_PAIRS],
        "more_pairs": max(0, len(pairs) - MAX_PAIRS),
    }
    return render(request, "labelling/agreement.html", context)


# --- helpers ---------------------------------------------------------------------------


def _count_pills(counts):
    return [(Sample.Consensus(s).label, counts[s], s) for s in REVIEW_STATES]


def _abilities(project):
    return {
        "can_adjudicate": role_can(project.role, Capability.ADJUDICATE),
        "can_gold": can_mark_gold(project),
        "label_classes": list(project.label_classes.order_by("order", "id")),
    }


def _label_from(project, raw):
    """The project's class with id ``raw``, or an error message to show."""
    raw = raw.strip()
    if not raw:
        return "Choose a label."
    label = LabelClass.objects.filter(project=project, pk=raw).first() if raw.isdigit() else None
    if label is None:
        names = ", ".join(project.label_classes.values_list("name", flat=True))
        return f"Label {raw[:40]} is not one of this project's classes ({names})."
    return label


def _rows(project, samples, viewer):
    labels = current_labels_for([s.pk for s in samples])
    rows = []
    for sample in samples:
        current = labels.get(sample.pk, [])
        mine = next((c for c in current if c.annotator_id == viewer.pk), None)
        text, fields = project.text_and_fields(sample.data)
        rows.append(
            {
                "sample": sample,
                "text": text,
                "fields": fields,
                "labels": current,
                "mine": mine,
                "error": None,
                "adjudication": None,
            }
        )
    return rows


EXPLAIN = {
    "cohen": "Agreement between two annotators beyond what each one's own label mix would "
    "give by chance (1 = perfect, 0 = chance); with more annotators, the mean over pairs.",
    "fleiss": "Chance-corrected agreement of several annotators at once, on samples that "
    "the same number of people labelled.",
    "alpha": "Krippendorff's chance-corrected agreement on every sample with two or more "
    "labels, however many each has; ≥ 0.8 is commonly called reliable, < 0.667 too weak.",
    "observed": "Share of annotator pairs on the same sample who chose the same label, "
    "with no correction for chance.",
}


def _metric_cards(report):
    cards = [
        {"name": "Cohen's κ", "metric": report.cohen_kappa, "explain": EXPLAIN["cohen"]},
        {"name": "Fleiss' κ", "metric": report.fleiss_kappa, "explain": EXPLAIN["fleiss"]},
        {
            "name": "Krippendorff's α",
            "metric": report.krippendorff_alpha,
            "explain": EXPLAIN["alpha"],
        },
        {
            "name": "Observed agreement",
            "metric": report.observed_agreement,
            "explain": EXPLAIN["observed"],
            "percent": True,
        },
    ]
    for card in cards[:2]:
        card["strength"], card["tone"] = _kappa_strength(card["metric"].value)
    cards[2]["strength"], cards[2]["tone"] = _alpha_strength(cards[2]["metric"].value)
    return cards


def _kappa_strength(value):
    """Landis & Koch's (1977) words for kappa, the scale most readers know."""
    if value is None:
        return "", ""
    for upper, word, tone in (
        (0.0, "poor", "bad"),
        (0.2, "slight", "bad"),
        (0.4, "fair", "warn"),
        (0.6, "moderate", "warn"),
        (0.8, "substantial", "ok"),
    ):
        if value <= upper:
            return word, tone
    return "almost perfect", "ok"


def _alpha_strength(value):
    """Krippendorff's own thresholds: 0.8 to rely on data, 0.667 for tentative conclusions."""
    if value is None:
        return "", ""
    if value >= 0.8:
        return "reliable", "ok"
    if value >= 0.667:
        return "tentative", "warn"
    return "too low", "bad"

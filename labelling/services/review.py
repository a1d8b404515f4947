"""Settling disagreements: adjudication on the review page and the API."""

from django.core.exceptions import ValidationError
from django.db import transaction

from leanml_site.audit import audit_record

from ..limits import note_too_long
from ..models import Adjudication, Annotation, LabelClass, Lease, QueueItem, Sample
from .consensus import consensus_refresh

# ``review`` of an adjudication that settles a suspected label error
# (monitoring's list): the person who gave the label may not settle it.
LABEL_ERROR_REVIEW = "label_error"
REVIEWS = (LABEL_ERROR_REVIEW,)


@transaction.atomic
def sample_adjudicate(*, sample, by, label, note="", gold=False, review=None) -> Adjudication:
    """Record ``by``'s answer for ``sample`` and make it the consensus.

    Adjudications append like labels do: the latest one wins, earlier ones
    stay for the record. Who may adjudicate (and mark gold) is the caller's
    check, through ``permissions.py``. ``review="label_error"``: it settles
    a suspected label error, which someone who labelled the sample may not
    (a review, not a second look by the same person). A note longer than
    ``MAX_NOTE_CHARS`` is refused, never cut short.

    1. Lock the sample row, so two adjudications (or an adjudication and a
       label submit that also locks it) apply one after the other and the
       stored consensus always reflects the latest rows.
    2. Append the adjudication and recompute consensus from the rows.
    3. Close the sample's open (or held) queue item: nobody needs to label it now.
    4. Audit the change of state and label.
    """
    if label.project_id != sample.project_id:
        names = ", ".join(sample.project.label_classes.values_list("name", flat=True))
        raise ValidationError(
            {"label": f"Label {label.pk} is not one of this project's classes ({names})."}
        )
    note = (note or "").strip()
    too_long = note_too_long(note)
    if too_long:
        raise ValidationError({"note": too_long})
    if review is not None and review not in REVIEWS:
        raise ValidationError(
            {"review": f"Unknown review “{review}” (known: {', '.join(REVIEWS)})."}
        )
    if (
        review == LABEL_ERROR_REVIEW
        and Annotation.objects.filter(
            sample_id=sample.pk, annotator=by, kind=Annotation.Kind.LABEL
        ).exists()
    ):
        raise ValidationError(
            {
                "review": "You labelled this sample: a suspected label error is settled by "
                "someone else."
            }
        )
    locked = (
        Sample.objects.select_for_update()
        .only("id", "project_id", "consensus_state", "consensus_label_id")
        .get(pk=sample.pk)
    )
    before = {
        "state": locked.consensus_state,
        "label": (
            LabelClass.objects.filter(pk=locked.consensus_label_id)
            .values_list("name", flat=True)
            .first()
        ),
    }
    adjudication = Adjudication.objects.create(
        sample=locked, label=label, by=by, gold=bool(gold), note=note
    )
    consensus_refresh(project=sample.project, sample_ids=[locked.pk])
    sample.refresh_from_db(fields=["consensus_state", "consensus_label"])

    open_items = list(
        QueueItem.objects.filter(sample=locked, state__in=QueueItem.QUEUED).values_list(
            "id", flat=True
        )
    )
    if open_items:
        QueueItem.objects.filter(id__in=open_items).update(state=QueueItem.State.DONE)
        Lease.objects.filter(item_id__in=open_items).delete()

    own_label = (
        Annotation.objects.filter(sample=locked, annotator=by)
        .order_by("-id")
        .values_list("label__name", flat=True)
        .first()
    )
    audit_record(
        actor=by,
        project=sample.project,
        action="consensus.adjudicate",
        target=sample,
        before=before,
        after={
            "state": sample.consensus_state,
            "label": label.name,
            "gold": adjudication.gold,
            "note": adjudication.note,
            # Allowed, but worth seeing: the adjudicator settled a dispute they were part of.
            "own_label": own_label,
        },
    )
    adjudication.sample = sample
    return adjudication

"""Recording labels: append-only annotations and the queue counters they move."""

import math

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from leanml_site.audit import audit_record

from ..models import Annotation, LabelClass, Lease, QueueItem, Sample
from .consensus import consensus_refresh

# Longer than any honest look at one sample: a tab left open over lunch
# would otherwise dominate the time-per-label statistics.
MAX_SECONDS = 3600.0


class AnnotationError(ValueError):
    """A refused submission; ``field`` names the input that was wrong."""

    def __init__(self, message, *, field=None):
        super().__init__(message)
        self.field = field


def label_class_resolve(*, project, value) -> LabelClass:
    """The project's label class for ``value`` (a LabelClass, an id, or a name)."""
    if isinstance(value, LabelClass):
        if value.project_id == project.id:
            return value
        value = value.name
    classes = list(project.label_classes.all())
    text = str(value).strip()
    for label_class in classes:
        if label_class.name == text:
            return label_class
    if text.isdigit():
        for label_class in classes:
            if label_class.pk == int(text):
                return label_class
    names = ", ".join(c.name for c in classes) or "none yet"
    raise AnnotationError(
        f"Unknown label '{value}': this project's labels are {names}.", field="label"
    )


def _clean_seconds(seconds):
    if seconds is None or seconds == "":
        return None
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise AnnotationError(
            f"seconds must be a number of seconds, not {seconds!r}.", field="seconds"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise AnnotationError(f"seconds must be zero or more, not {seconds!r}.", field="seconds")
    return min(seconds, MAX_SECONDS)


def annotation_submit(*, project, user, sample, label=None, skip=False, seconds=None) -> Annotation:
    """Record ``user``'s label (or skip) for ``sample`` as a new row.

    Nothing is updated in place: relabelling appends a row and the latest row
    per annotator is their current answer. Queue counters (see
    ``services/queue.py`` for the invariant) move like this:

    1. The user's leases on the sample's items are locked and deleted: each
       frees one claim (lease rows are locked before the item row, the order
       every queue function keeps).
    2. The sample's open queue item is locked (or, if there is none, the
       sample row, so two late labels still refresh consensus one after the
       other).
    3. The annotation row is appended.
    4. Counters: a first label from this annotator adds a claim and a done
       label (with step 1 that turns their lease into a done slot, and a label
       that arrives after its lease expired still counts, even past the
       overlap); a skip from someone holding a lease only frees the slot; a
       relabel changes nothing; a skip replacing their label gives both back.
       The item is done once ``labels_done`` reaches the overlap.
    5. Consensus is recomputed and the change audited, in the same transaction.

    ``seconds`` is the time spent as measured by the page; when the page could
    not measure it (no JavaScript), the time since the lease was handed out.
    """
    if sample.project_id != project.id:
        raise AnnotationError(
            f"Sample {sample.pk} does not belong to project {project.pk}.", field="sample"
        )
    if skip and label is not None:
        raise AnnotationError("Give a label or skip, not both.", field="label")
    if not skip and label is None:
        raise AnnotationError("Choose a label (or skip the sample).", field="label")
    label = None if skip else label_class_resolve(project=project, value=label)
    seconds = _clean_seconds(seconds)
    kind = Annotation.Kind.SKIP if skip else Annotation.Kind.LABEL

    with transaction.atomic():
        leases = list(
            Lease.objects.select_for_update(of=("self",))
            .filter(user=user, item__sample_id=sample.pk)
            .order_by("id")
            .values_list("id", "item_id", "created_at")
        )
        if leases:
            Lease.objects.filter(id__in=[lease_id for lease_id, _, _ in leases]).delete()

        item = (
            QueueItem.objects.select_for_update()
            .filter(sample_id=sample.pk, state=QueueItem.State.OPEN)
            .first()
        )
        if item is None:
            Sample.objects.select_for_update().filter(pk=sample.pk).values_list("id").first()

        previous = (
            Annotation.objects.filter(sample_id=sample.pk, annotator=user)
            .order_by("-id")
            .values_list("kind", flat=True)
            .first()
        )
        had_label = previous == Annotation.Kind.LABEL
        has_label = kind == Annotation.Kind.LABEL

        open_leases = [lease for lease in leases if item is not None and lease[1] == item.pk]
        if seconds is None and open_leases:
            seconds = _clean_seconds((timezone.now() - open_leases[0][2]).total_seconds())

        annotation = Annotation.objects.create(
            project=project,
            sample_id=sample.pk,
            annotator=user,
            kind=kind,
            label=label,
            seconds=seconds,
            revision=sample.revision,
        )

        # Leases on items that are no longer open still counted a claim there.
        for _, item_id, _ in leases:
            if item is None or item_id != item.pk:
                QueueItem.objects.filter(pk=item_id).update(
                    claims=Greatest(F("claims") - 1, Value(0))
                )
        if item is not None:
            done_delta = int(has_label and not had_label) - int(had_label and not has_label)
            claims = max(0, item.claims - len(open_leases) + done_delta)
            labels_done = max(0, item.labels_done + done_delta)
            state = QueueItem.State.DONE if labels_done >= project.overlap else QueueItem.State.OPEN
            if (claims, labels_done, state) != (item.claims, item.labels_done, item.state):
                QueueItem.objects.filter(pk=item.pk).update(
                    claims=claims, labels_done=labels_done, state=state
                )

        consensus_refresh(project=project, sample_ids=[sample.pk])
        audit_record(
            actor=user,
            project=project,
            action="annotation.create",
            target=annotation,
            before={"kind": previous} if previous else None,
            after={
                "sample": sample.external_id,
                "kind": kind,
                "label": label.name if label else None,
                "seconds": seconds,
            },
        )
    annotation.label = label
    return annotation


def annotation_last(*, project, user) -> Annotation | None:
    """The user's own latest annotation in the project: what "undo" goes back to."""
    return (
        Annotation.objects.filter(project=project, annotator=user, origin=Annotation.Origin.HUMAN)
        .select_related("sample", "label")
        .order_by("-id")
        .first()
    )

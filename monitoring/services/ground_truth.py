"""Ground truth as it arrives: end-user feedback one call at a time, observed
outcomes in bulk, expert labels on surfaced samples. Each is kept with its
source; none needs the prediction log to exist yet (they meet by request id).
"""

from django.db import transaction
from django.utils import timezone

from ..models import GroundTruth
from .parsing import IngestError, RowErrors, request_id_text
from .predictions import MAX_REQUEST_ID, project_classes

OUTCOME_FIELDS = ("request_id", "label")


def _check_request_id(request_id):
    request_id = request_id_text(request_id)
    if not isinstance(request_id, str) or not request_id:
        raise IngestError("request_id is missing.", field="request_id")
    if len(request_id) > MAX_REQUEST_ID:
        raise IngestError(
            f"request_id is longer than {MAX_REQUEST_ID} characters.", field="request_id"
        )
    return request_id


def _check_label(project, label):
    classes = project_classes(project)
    if label not in classes:
        raise IngestError(
            f"Unknown class “{label}” (classes: {', '.join(classes)}).", field="label"
        )
    return label


def feedback_record(*, project, request_id, label, kind, api_key=None, by=None):
    """End-user feedback on one prediction: ``(row, created)``.

    The same feedback sent twice in a row (a retried call, a double click) is
    stored once: if the newest feedback on the request already says this
    label and kind, that row is returned with ``created`` False.
    """
    request_id = _check_request_id(request_id)
    label = _check_label(project, label)
    if kind not in GroundTruth.Kind.values:
        raise IngestError(f"kind must be “confirm” or “correct” (got “{kind}”).", field="kind")
    with transaction.atomic():
        latest = (
            GroundTruth.objects.select_for_update()
            .filter(project=project, request_id=request_id, source=GroundTruth.Source.FEEDBACK)
            .order_by("-created_at", "-id")
            .first()
        )
        if latest is not None and (latest.label, latest.kind) == (label, kind):
            return latest, False
        row = GroundTruth.objects.create(
            project=project,
            request_id=request_id,
            label=label,
            source=GroundTruth.Source.FEEDBACK,
            kind=kind,
            api_key=api_key,
            by=by,
            created_at=timezone.now(),
        )
    return row, True


def ground_truth_record_expert(*, project, request_id, label, by):
    """An expert's label on a surfaced sample, as ground truth for its log."""
    return GroundTruth.objects.create(
        project=project,
        request_id=_check_request_id(request_id),
        label=_check_label(project, label),
        source=GroundTruth.Source.EXPERT,
        by=by,
        created_at=timezone.now(),
    )


def outcomes_ingest(*, project, frame, api_key=None, by=None, row_offset=0) -> dict:
    """Observed outcomes in bulk (``request_id``, ``label``), all or nothing:
    ``{"stored": n, "already_stored": m}``. An outcome equal to the newest
    outcome already stored for its request counts as already stored, so a
    re-sent batch changes nothing."""
    unknown = sorted(set(frame.columns) - set(OUTCOME_FIELDS))
    if unknown:
        raise IngestError(
            f"Unknown field “{unknown[0]}” (fields: {', '.join(OUTCOME_FIELDS)}).",
            field=unknown[0],
        )
    for name in OUTCOME_FIELDS:
        if name not in frame.columns:
            raise IngestError(f"“{name}” is missing: every row needs it.", field=name)
    classes = set(project_classes(project))
    errors = RowErrors(offset=row_offset)
    seen, pairs = {}, []
    for index, (request_id, label) in enumerate(
        zip(frame["request_id"].tolist(), frame["label"].tolist(), strict=True)
    ):
        request_id = request_id_text(request_id)
        if not isinstance(request_id, str) or not request_id:
            errors.add(index, "request_id", None, "missing (every row needs a request id)")
        elif len(request_id) > MAX_REQUEST_ID:
            errors.add(index, "request_id", request_id, f"longer than {MAX_REQUEST_ID} characters")
        elif request_id in seen:
            errors.add(
                index,
                "request_id",
                request_id,
                f"request id repeated in this batch (first at row {seen[request_id]})",
            )
        else:
            seen[request_id] = index + 1 + row_offset
        if label not in classes:
            errors.add(
                index, "label", label, f"unknown class (classes: {', '.join(sorted(classes))})"
            )
        pairs.append((request_id, label))
    errors.raise_if_any()
    with transaction.atomic():
        latest = {}
        ids = [request_id for request_id, _ in pairs]
        for start in range(0, len(ids), 1000):
            for request_id, label in (
                GroundTruth.objects.filter(
                    project=project,
                    source=GroundTruth.Source.OUTCOME,
                    request_id__in=ids[start : start + 1000],
                )
                .order_by("created_at", "id")
                .values_list("request_id", "label")
            ):
                latest[request_id] = label
        now = timezone.now()
        new = [
            GroundTruth(
                project=project,
                request_id=request_id,
                label=label,
                source=GroundTruth.Source.OUTCOME,
                api_key=api_key,
                by=by,
                created_at=now,
            )
            for request_id, label in pairs
            if latest.get(request_id) != label
        ]
        GroundTruth.objects.bulk_create(new, batch_size=2000)
    return {"stored": len(new), "already_stored": len(pairs) - len(new)}

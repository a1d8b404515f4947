"""The work queue: which sample each annotator gets next, with leases."""

from ..models import QueueItem


def queue_add(
    *, project, sample_ids, priority=0.0, strategy="imported", reason="Imported", score=None
) -> int:
    """Queue samples that have no open queue item yet; returns how many were queued."""
    sample_ids = list(sample_ids)
    already = set(
        QueueItem.objects.filter(
            project=project, sample_id__in=sample_ids, state=QueueItem.State.OPEN
        ).values_list("sample_id", flat=True)
    )
    items = [
        QueueItem(
            project=project,
            sample_id=sample_id,
            priority=priority,
            strategy=strategy,
            reason=reason,
            score=score,
        )
        for sample_id in dict.fromkeys(sample_ids)
        if sample_id not in already
    ]
    QueueItem.objects.bulk_create(items, batch_size=5000)
    return len(items)

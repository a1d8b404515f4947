"""Per-sample consensus, derived from annotations and adjudications.

The state lives on ``Sample`` (``consensus_state``, ``consensus_label``) so
filters and snapshots read one table; it is recomputed from the append-only
annotation and adjudication rows, never edited by hand.
"""

from collections import Counter, defaultdict

from ..models import Adjudication, Annotation, Sample

C = Sample.Consensus


def decide(labels: list[int], *, overlap: int, adjudication=None) -> tuple[str, int | None]:
    """(state, label id) from each annotator's current label id.

    An adjudication wins; otherwise fewer labels than the project's overlap
    leave the sample pending (with the leading label as a provisional answer
    when it has no rival), a unanimous set is agreed, a strict majority is a
    majority with dissent, and a tie is disputed (no label).
    """
    if adjudication is not None:
        label_id, gold = adjudication
        return (C.GOLD if gold else C.ADJUDICATED), label_id
    if not labels:
        return C.NONE, None
    counts = Counter(labels).most_common()
    top_label, top_count = counts[0]
    tie = len(counts) > 1 and counts[1][1] == top_count
    if len(labels) < overlap:
        return C.PENDING, (None if tie or len(counts) > 1 else top_label)
    if len(counts) == 1:
        return C.AGREED, top_label
    if tie:
        return C.DISPUTED, None
    return C.MAJORITY, top_label


def consensus_of(answers, *, overlap, adjudication=None) -> tuple[str, int | None]:
    """(state, label id) of one sample from its annotation rows in id order,
    as ``(annotator_id, label_id)`` pairs (a skip has no label id): the
    latest row per annotator is their answer. For a caller that has the rows
    already (a label submit reads them under the sample's lock)."""
    latest = {}
    for annotator_id, label_id in answers:
        latest[annotator_id] = label_id
    labels = [label_id for label_id in latest.values() if label_id is not None]
    return decide(labels, overlap=overlap, adjudication=adjudication)


def current_labels(sample_ids) -> dict[int, list[int]]:
    """Each sample's current label ids, one per annotator (their latest row;
    a latest skip means they have no label)."""
    # One pass over the rows in id order is faster than a GROUP BY + IN
    # subquery on both databases; the last row seen per annotator wins.
    latest = {}
    rows = (
        Annotation.objects.filter(sample_id__in=sample_ids)
        .order_by("id")
        .values_list("sample_id", "annotator_id", "label_id")
    )
    for sample_id, annotator_id, label_id in rows:
        latest[sample_id, annotator_id] = label_id
    labels = defaultdict(list)
    for (sample_id, _), label_id in latest.items():
        if label_id is not None:  # a skip carries no label
            labels[sample_id].append(label_id)
    return labels


def latest_adjudications(sample_ids) -> dict[int, tuple[int, bool]]:
    latest = {}
    rows = (
        Adjudication.objects.filter(sample_id__in=sample_ids)
        .order_by("id")
        .values_list("sample_id", "label_id", "gold")
    )
    for sample_id, label_id, gold in rows:
        latest[sample_id] = (label_id, gold)
    return latest


def consensus_refresh(*, project, sample_ids, batch_size=2000) -> int:
    """Recompute consensus for the given samples of ``project``; returns how many changed."""
    sample_ids = list(sample_ids)
    changed = 0
    for start in range(0, len(sample_ids), batch_size):
        batch = sample_ids[start : start + batch_size]
        labels = current_labels(batch)
        adjudications = latest_adjudications(batch)
        # Group the changed samples by their new outcome: a handful of
        # UPDATE ... WHERE id IN (...) statements instead of bulk_update's
        # per-row CASE, which is far slower at thousands of rows.
        by_outcome = defaultdict(list)
        current = Sample.objects.filter(project=project, id__in=batch).values_list(
            "id", "consensus_state", "consensus_label_id"
        )
        for sample_id, old_state, old_label in current:
            outcome = decide(
                labels.get(sample_id, []),
                overlap=project.overlap,
                adjudication=adjudications.get(sample_id),
            )
            if outcome != (old_state, old_label):
                by_outcome[outcome].append(sample_id)
        for (state, label_id), ids in by_outcome.items():
            Sample.objects.filter(id__in=ids).update(
                consensus_state=state, consensus_label_id=label_id
            )
            changed += len(ids)
    return changed

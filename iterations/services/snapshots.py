"""Dataset snapshots: freeze the labelled data a model version is trained on."""

from collections import Counter

from django.db import IntegrityError, transaction

from labelling.models import Flag, Sample
from leanml_site.audit import audit_record
from ml.snapshot import snapshot_hash

from ..models import DatasetSnapshot, SnapshotRow

# Consensus states a label can be trained on. Pending, disputed and
# unlabelled samples have no settled answer; excluded samples (status) and
# flagged ones are left out by the query below.
USABLE_STATES = (
    Sample.Consensus.AGREED,
    Sample.Consensus.MAJORITY,
    Sample.Consensus.ADJUDICATED,
    Sample.Consensus.GOLD,
)
BATCH_SIZE = 5000


def usable_samples(project):
    """The samples a snapshot of ``project`` freezes: active, with a settled
    consensus label, and no open flag. Also counted by the automatic retrain
    rule, so both agree on what a "new label" is."""
    return Sample.objects.filter(
        project=project,
        status=Sample.Status.ACTIVE,
        consensus_state__in=USABLE_STATES,
        consensus_label__isnull=False,
    ).exclude(
        pk__in=Flag.objects.filter(sample__project=project, resolved_at__isnull=True).values(
            "sample_id"
        )
    )


def snapshot_create(*, project, by) -> DatasetSnapshot:
    """Freeze (sample, revision, consensus label, split) of every usable
    labelled sample of ``project``.

    Identical data gives the identical content hash, and then the snapshot
    already stored is returned instead of a copy, so retraining on unchanged
    data points at the same snapshot.
    """
    # One query with plain tuples: at 100,000 samples building model
    # instances would cost more than the rest of the work together.
    rows = list(
        usable_samples(project)
        .order_by("id")
        .values_list("id", "external_id", "revision", "consensus_label_id", "split")
    )
    names = dict(project.label_classes.values_list("id", "name"))
    content_hash = snapshot_hash(
        [
            (external_id, revision, names[label], split)
            for _, external_id, revision, label, split in rows
        ]
    )
    existing = DatasetSnapshot.objects.filter(project=project, content_hash=content_hash).first()
    if existing is not None:
        return existing

    counts = {"train": Counter(), "holdout": Counter()}
    for _, _, _, label, split in rows:
        counts.setdefault(split, Counter())[names[label]] += 1
    try:
        with transaction.atomic():
            snapshot = DatasetSnapshot.objects.create(
                project=project,
                content_hash=content_hash,
                row_count=len(rows),
                class_counts={split: dict(sorted(c.items())) for split, c in counts.items()},
                created_by=by,
            )
            SnapshotRow.objects.bulk_create(
                (
                    SnapshotRow(
                        snapshot=snapshot,
                        sample_id=sample_id,
                        revision=revision,
                        label_id=label,
                        split=split,
                    )
                    for sample_id, _, revision, label, split in rows
                ),
                batch_size=BATCH_SIZE,
            )
            audit_record(
                actor=by,
                action="snapshot.create",
                project=project,
                target=snapshot,
                after={"content_hash": content_hash, "rows": len(rows)},
            )
    except IntegrityError:
        # Another request froze the same data a moment ago: that row is ours too.
        return DatasetSnapshot.objects.get(project=project, content_hash=content_hash)
    return snapshot

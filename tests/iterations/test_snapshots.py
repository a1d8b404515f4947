from iterations.models import DatasetSnapshot, SnapshotRow
from iterations.services.snapshots import snapshot_create
from labelling.models import Flag, Sample
from leanml_site.models import AuditEvent
from ml.snapshot import snapshot_hash

from .conftest import add_samples


def test_it_freezes_usable_labelled_samples_only(reviews):
    project, classes = reviews.project, reviews.classes
    states = {
        "x-majority": Sample.Consensus.MAJORITY,
        "x-adjudicated": Sample.Consensus.ADJUDICATED,
        "x-gold": Sample.Consensus.GOLD,
        "x-pending": Sample.Consensus.PENDING,
        "x-disputed": Sample.Consensus.DISPUTED,
    }
    for external_id, state in states.items():
        add_samples(project, classes, [(external_id, {"review": "ok"}, "great")], state=state)
    add_samples(project, classes, [("x-unlabelled", {"review": "?"}, None)])
    excluded, flagged, resolved = add_samples(
        project,
        classes,
        [(f"x-{name}", {"review": name}, "other") for name in ("excluded", "flagged", "resolved")],
    )
    Sample.objects.filter(pk=excluded.pk).update(status=Sample.Status.EXCLUDED)
    Flag.objects.create(sample=flagged, kind=Flag.Kind.AMBIGUOUS, created_by=reviews.user)
    Flag.objects.create(
        sample=resolved,
        kind=Flag.Kind.AMBIGUOUS,
        created_by=reviews.user,
        resolved_at="2026-01-01T00:00:00Z",
    )

    snapshot = snapshot_create(project=project, by=reviews.user)

    ids = set(
        SnapshotRow.objects.filter(snapshot=snapshot).values_list("sample__external_id", flat=True)
    )
    assert {"x-majority", "x-adjudicated", "x-gold", "x-resolved"} <= ids
    assert not ids & {"x-pending", "x-disputed", "x-unlabelled", "x-excluded", "x-flagged"}
    assert snapshot.row_count == len(ids) == 204
    counts = snapshot.class_counts
    assert sum(counts["train"].values()) + sum(counts["holdout"].values()) == 204
    assert AuditEvent.objects.filter(action="snapshot.create", target_id=str(snapshot.pk)).exists()


def test_its_hash_is_the_snapshot_hash_of_its_rows(reviews):
    snapshot = snapshot_create(project=reviews.project, by=reviews.user)
    rows = SnapshotRow.objects.filter(snapshot=snapshot).values_list(
        "sample__external_id", "revision", "label__name", "split"
    )
    assert snapshot.content_hash == snapshot_hash(list(rows))
    row = SnapshotRow.objects.filter(snapshot=snapshot).select_related("sample").first()
    assert (row.revision, row.split) == (row.sample.revision, row.sample.split)


def test_identical_data_returns_the_same_snapshot(reviews):
    first = snapshot_create(project=reviews.project, by=reviews.user)
    second = snapshot_create(project=reviews.project, by=None)
    assert second.pk == first.pk
    assert DatasetSnapshot.objects.count() == 1
    assert SnapshotRow.objects.count() == 200


def test_a_relabel_gives_a_new_hash(reviews):
    first = snapshot_create(project=reviews.project, by=reviews.user)
    sample = Sample.objects.filter(project=reviews.project).order_by("id").first()
    other = reviews.classes["other" if sample.consensus_label.name == "great" else "great"]
    Sample.objects.filter(pk=sample.pk).update(consensus_label=other)

    second = snapshot_create(project=reviews.project, by=reviews.user)

    assert second.pk != first.pk
    assert second.content_hash != first.content_hash
    assert SnapshotRow.objects.get(snapshot=second, sample=sample).label == other
    assert SnapshotRow.objects.get(snapshot=first, sample=sample).label != other


def test_a_corrected_sample_gives_a_new_hash(reviews):
    first = snapshot_create(project=reviews.project, by=reviews.user)
    Sample.objects.filter(pk=Sample.objects.order_by("id").first().pk).update(revision=2)
    assert snapshot_create(project=reviews.project, by=reviews.user).pk != first.pk

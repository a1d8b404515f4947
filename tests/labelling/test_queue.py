"""Queue and annotation service semantics: overlap, leases, skips, relabels."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labelling.models import Annotation, Lease, QueueItem, Sample
from labelling.services.annotations import AnnotationError, annotation_last, annotation_submit
from labelling.services.queue import (
    annotator_progress,
    lease_release,
    queue_add,
    queue_expire_leases,
    queue_item_update,
    queue_next,
)
from leanml_site.models import AuditEvent
from tests.factories import LabelClassFactory, SampleFactory, UserFactory

pytestmark = pytest.mark.django_db


def make_queue(project, n, priorities=None):
    samples = [SampleFactory(project=project) for _ in range(n)]
    for index, sample in enumerate(samples):
        priority = priorities[index] if priorities else 0
        queue_add(project=project, sample_ids=[sample.pk], priority=priority, reason=f"r{index}")
    return samples


def item_of(sample):
    return QueueItem.objects.filter(sample=sample).order_by("-id").first()


def expire(lease):
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def annotators(team):
    return [team.users["expert"], team.users["data_scientist"], team.users["owner"]]


def test_it_hands_out_the_highest_priority_first_then_the_oldest(team, annotators):
    samples = make_queue(team.project, 4, priorities=[0, 5, 5, 1])
    got = []
    for user in [*annotators, UserFactory()]:
        got.append(queue_next(project=team.project, user=user).item.sample)
    assert got == [samples[1], samples[2], samples[3], samples[0]]


def test_it_returns_the_lease_already_held_without_a_second_claim(team, annotators):
    make_queue(team.project, 2)
    first = queue_next(project=team.project, user=annotators[0])
    again = queue_next(project=team.project, user=annotators[0])
    assert again.pk == first.pk
    assert again.expires_at == first.expires_at
    assert Lease.objects.filter(user=annotators[0]).count() == 1
    assert item_of(first.item.sample).claims == 1


def test_prefetch_excludes_the_card_on_screen_so_at_most_two_leases(team, annotators):
    make_queue(team.project, 3)
    current = queue_next(project=team.project, user=annotators[0])
    following = queue_next(
        project=team.project, user=annotators[0], exclude_item_ids=[current.item_id]
    )
    assert following.item_id != current.item_id
    again = queue_next(project=team.project, user=annotators[0], exclude_item_ids=[current.item_id])
    assert again.pk == following.pk
    assert Lease.objects.filter(user=annotators[0]).count() == 2


def test_overlap_one_gives_each_sample_to_one_annotator(team, annotators):
    make_queue(team.project, 2)
    a = queue_next(project=team.project, user=annotators[0])
    b = queue_next(project=team.project, user=annotators[1])
    assert a.item_id != b.item_id
    assert queue_next(project=team.project, user=annotators[2]) is None


def test_overlap_three_gives_a_sample_to_three_annotators_then_done(team, annotators):
    team.project.overlap = 3
    team.project.save()
    first, second = make_queue(team.project, 2, priorities=[1, 0])
    fourth = UserFactory()
    leases = [queue_next(project=team.project, user=u) for u in annotators]
    assert {lease.item.sample for lease in leases} == {first}
    assert queue_next(project=team.project, user=fourth).item.sample == second
    great, other = team.classes
    for user, label in zip(annotators, [great, great, other], strict=True):
        annotation_submit(project=team.project, user=user, sample=first, label=label)
    item = item_of(first)
    assert (item.state, item.labels_done, item.claims) == ("done", 3, 3)
    first.refresh_from_db()
    assert (first.consensus_state, first.consensus_label) == (Sample.Consensus.MAJORITY, great)
    assert not Lease.objects.filter(item=item).exists()


def test_a_label_turns_the_lease_into_a_done_slot(team, annotators):
    team.project.overlap = 2
    team.project.save()
    (sample,) = make_queue(team.project, 1)
    queue_next(project=team.project, user=annotators[0])
    annotation = annotation_submit(
        project=team.project, user=annotators[0], sample=sample, label=team.classes[0], seconds=3.5
    )
    item = item_of(sample)
    assert (item.state, item.labels_done, item.claims) == ("open", 1, 1)
    assert annotation.seconds == 3.5 and annotation.kind == "label"
    assert not Lease.objects.exists()
    sample.refresh_from_db()
    assert sample.consensus_state == Sample.Consensus.PENDING
    event = AuditEvent.objects.get(action="annotation.create")
    assert event.after["label"] == "great" and event.actor == annotators[0]
    # the same annotator never gets it again; another one does
    assert queue_next(project=team.project, user=annotators[0]) is None
    assert queue_next(project=team.project, user=annotators[1]).item == item


def test_a_skip_frees_the_slot_but_the_skipper_never_gets_it_again(team, annotators):
    (sample,) = make_queue(team.project, 1)
    queue_next(project=team.project, user=annotators[0])
    annotation = annotation_submit(
        project=team.project, user=annotators[0], sample=sample, skip=True
    )
    assert annotation.kind == "skip" and annotation.label is None
    item = item_of(sample)
    assert (item.state, item.labels_done, item.claims) == ("open", 0, 0)
    assert queue_next(project=team.project, user=annotators[0]) is None
    assert queue_next(project=team.project, user=annotators[1]).item == item


def test_an_expired_lease_returns_the_sample_to_the_queue(team, annotators):
    (sample,) = make_queue(team.project, 1)
    lease = queue_next(project=team.project, user=annotators[0])
    assert queue_next(project=team.project, user=annotators[1]) is None
    expire(lease)
    taken = queue_next(project=team.project, user=annotators[1])
    assert taken.item.sample == sample
    assert not Lease.objects.filter(pk=lease.pk).exists()
    assert item_of(sample).claims == 1


def test_a_label_after_the_lease_expired_is_kept(team, annotators):
    (sample,) = make_queue(team.project, 1)
    late = queue_next(project=team.project, user=annotators[0])
    expire(late)
    queue_next(project=team.project, user=annotators[1])  # takes the sample over
    annotation_submit(
        project=team.project, user=annotators[0], sample=sample, label=team.classes[0]
    )
    item = item_of(sample)
    assert (item.state, item.labels_done, item.claims) == ("done", 1, 2)
    # the second annotator's label still counts too
    annotation_submit(
        project=team.project, user=annotators[1], sample=sample, label=team.classes[1]
    )
    assert Annotation.objects.filter(sample=sample, kind="label").count() == 2
    assert not Lease.objects.exists()
    sample.refresh_from_db()
    assert sample.consensus_state == Sample.Consensus.DISPUTED


def test_a_relabel_appends_a_row_and_changes_no_counter(team, annotators):
    team.project.overlap = 2
    team.project.save()
    (sample,) = make_queue(team.project, 1)
    great, other = team.classes
    queue_next(project=team.project, user=annotators[0])
    annotation_submit(project=team.project, user=annotators[0], sample=sample, label=great)
    annotation_submit(project=team.project, user=annotators[0], sample=sample, label=other)
    item = item_of(sample)
    assert (item.state, item.labels_done, item.claims) == ("open", 1, 1)
    assert list(
        Annotation.objects.filter(sample=sample)
        .order_by("id")
        .values_list("label__name", flat=True)
    ) == ["great", "other"]
    sample.refresh_from_db()
    assert sample.consensus_state == Sample.Consensus.PENDING
    assert sample.consensus_label == other


def test_a_skip_replacing_my_label_gives_the_slot_back(team, annotators):
    team.project.overlap = 2
    team.project.save()
    (sample,) = make_queue(team.project, 1)
    annotation_submit(
        project=team.project, user=annotators[0], sample=sample, label=team.classes[0]
    )
    annotation_submit(project=team.project, user=annotators[0], sample=sample, skip=True)
    item = item_of(sample)
    assert (item.labels_done, item.claims) == (0, 0)
    sample.refresh_from_db()
    assert sample.consensus_state == Sample.Consensus.NONE


def test_undo_goes_back_to_my_own_last_annotation_only(team, annotators):
    first, second = make_queue(team.project, 2)
    annotation_submit(project=team.project, user=annotators[0], sample=first, label=team.classes[0])
    annotation_submit(
        project=team.project, user=annotators[1], sample=second, label=team.classes[0]
    )
    last = annotation_last(project=team.project, user=annotators[0])
    assert last.sample == first
    assert annotation_last(project=team.project, user=annotators[2]) is None
    # relabelling after undo keeps the old row in the history
    annotation_submit(project=team.project, user=annotators[0], sample=first, label=team.classes[1])
    assert Annotation.objects.filter(sample=first, annotator=annotators[0]).count() == 2
    assert item_of(first).labels_done == 1


def test_it_rejects_a_label_of_another_project_naming_it(team, annotators):
    (sample,) = make_queue(team.project, 1)
    foreign = LabelClassFactory(project=team.other_project, name="refunds")
    with pytest.raises(AnnotationError, match="Unknown label 'refunds'") as excinfo:
        annotation_submit(project=team.project, user=annotators[0], sample=sample, label=foreign)
    assert excinfo.value.field == "label"
    with pytest.raises(AnnotationError, match="Unknown label 'nope'.*great, other"):
        annotation_submit(project=team.project, user=annotators[0], sample=sample, label="nope")
    assert not Annotation.objects.exists()


def test_it_rejects_bad_input(team, annotators):
    (sample,) = make_queue(team.project, 1)
    foreign = SampleFactory(project=team.other_project)
    user = annotators[0]
    with pytest.raises(AnnotationError, match="does not belong") as excinfo:
        annotation_submit(project=team.project, user=user, sample=foreign, label="great")
    assert excinfo.value.field == "sample"
    with pytest.raises(AnnotationError, match="Choose a label"):
        annotation_submit(project=team.project, user=user, sample=sample)
    with pytest.raises(AnnotationError, match="not both"):
        annotation_submit(project=team.project, user=user, sample=sample, label="great", skip=True)
    with pytest.raises(AnnotationError, match="seconds") as excinfo:
        annotation_submit(project=team.project, user=user, sample=sample, label="great", seconds=-1)
    assert excinfo.value.field == "seconds"
    assert not Annotation.objects.exists()


def test_labels_by_name_or_id_are_accepted(team, annotators):
    first, second = make_queue(team.project, 2)
    by_name = annotation_submit(
        project=team.project, user=annotators[0], sample=first, label="other"
    )
    by_id = annotation_submit(
        project=team.project, user=annotators[0], sample=second, label=str(team.classes[0].pk)
    )
    assert (by_name.label, by_id.label) == (team.classes[1], team.classes[0])


def test_without_measured_seconds_the_time_since_the_lease_is_recorded(team, annotators):
    (sample,) = make_queue(team.project, 1)
    lease = queue_next(project=team.project, user=annotators[0])
    Lease.objects.filter(pk=lease.pk).update(created_at=timezone.now() - timedelta(seconds=12))
    annotation = annotation_submit(
        project=team.project, user=annotators[0], sample=sample, label="great"
    )
    assert 11 < annotation.seconds < 60


def test_leaving_the_page_releases_the_lease(team, annotators):
    (sample,) = make_queue(team.project, 1)
    lease = queue_next(project=team.project, user=annotators[0])
    assert lease_release(project=team.project, user=annotators[0], item=lease.item)
    assert not lease_release(project=team.project, user=annotators[0], item=lease.item)
    assert item_of(sample).claims == 0
    assert queue_next(project=team.project, user=annotators[1]).item == lease.item


def test_the_periodic_expiry_releases_every_expired_lease(team, annotators):
    team.project.overlap = 2
    team.project.save()
    (sample,) = make_queue(team.project, 1)
    for lease in [queue_next(project=team.project, user=user) for user in annotators[:2]]:
        expire(lease)
    assert item_of(sample).claims == 2
    assert queue_expire_leases() == 2
    assert not Lease.objects.exists()
    assert item_of(sample).claims == 0
    assert queue_expire_leases(project=team.project) == 0


def test_progress_counts_my_labels_and_what_is_left_for_me(team, annotators):
    first, second, third = make_queue(team.project, 3)
    me = annotators[0]
    queue_next(project=team.project, user=annotators[1])  # someone else holds `first`
    annotation_submit(project=team.project, user=me, sample=second, label="great")
    annotation_submit(project=team.project, user=me, sample=second, label="other")
    progress = annotator_progress(project=team.project, user=me)
    assert (progress.today, progress.total, progress.remaining) == (1, 1, 1)
    assert not progress.remaining_capped


def test_reprioritising_moves_an_item_to_the_front_and_is_audited(team, annotators):
    first, second = make_queue(team.project, 2)
    queue_item_update(item=item_of(second), by=annotators[2], priority=9, reason="hard case")
    lease = queue_next(project=team.project, user=annotators[0])
    assert lease.item.sample == second and lease.item.reason == "hard case"
    assert AuditEvent.objects.filter(action="queue_item.update").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="EXPLAIN of the PostgreSQL plan")
def test_next_is_one_statement_that_scans_the_partial_queue_index(team, annotators):
    from labelling.services.queue import _NEXT_POSTGRESQL, _next_params

    make_queue(team.project, 3)
    with CaptureQueriesContext(connection) as queries:
        assert queue_next(project=team.project, user=annotators[0]) is not None
    # One round trip: sweep, pick, lease and claim in a single statement.
    assert len(queries) == 1
    # Only the queue row is locked (not the joined sample), and both
    # exclusions are anti-joins the planner can drive from the index order.
    assert "FOR UPDATE OF q SKIP LOCKED" in _NEXT_POSTGRESQL
    params = _next_params(project=team.project, user=annotators[1], exclude=[], now=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        # On three rows the planner may as well read the sample index and
        # sort; what matters is that the order can come from queue_next.
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + _NEXT_POSTGRESQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using queue_next" in plan
    assert plan.count("Anti Join") == 2


def test_the_expiry_task_calls_the_service(team, annotators):
    from labelling.tasks import queue_expire_leases_task

    make_queue(team.project, 1)
    expire(queue_next(project=team.project, user=annotators[0]))
    assert queue_expire_leases_task(team.other_project.pk) == 0
    assert queue_expire_leases_task(team.project.pk) == 1
    assert queue_expire_leases_task() == 0

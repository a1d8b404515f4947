"""Many annotators pulling and submitting at once: never beyond the overlap, no label lost."""

import random
import threading
import time
from collections import defaultdict

import pytest
from django.db import connection

from labelling.models import Annotation, Lease, QueueItem
from labelling.services.annotations import annotation_submit, annotation_submit_and_next
from labelling.services.queue import queue_add, queue_next
from tests.factories import (
    LabelClassFactory,
    MembershipFactory,
    ProjectFactory,
    SampleFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


def run_annotators(*, threads, samples, overlap, skip_rate=0.1, lease_seconds=3600, together=False):
    """Each thread is one annotator taking and answering samples until none is left.

    ``together``: each answer also takes the next sample in the same call
    (``annotation_submit_and_next``, the API's submit-next), as a script
    does; ``queue_next`` alone only to start and after an empty answer.

    With ``lease_seconds=0`` every lease has expired by the time it is answered,
    so samples are taken over and labels arrive late: the overlap can then be
    exceeded (a late label is kept), but no label may be lost and the counters
    must still add up.
    """
    project = ProjectFactory(overlap=overlap, lease_seconds=lease_seconds)
    expiring = lease_seconds == 0
    classes = [
        LabelClassFactory(project=project, name="great"),
        LabelClassFactory(project=project, name="other"),
    ]
    sample_ids = [SampleFactory(project=project).pk for _ in range(samples)]
    queue_add(project=project, sample_ids=sample_ids)
    users = [UserFactory() for _ in range(threads)]
    for user in users:
        MembershipFactory(project=project, user=user)

    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    holders = defaultdict(set)  # item -> users holding a lease right now
    labelled = defaultdict(set)  # item -> users whose label is in
    most_at_once = defaultdict(int)  # item -> most annotators it was given to at once
    handed = defaultdict(list)  # user -> items handed to them, in order
    submitted = defaultdict(int)  # user -> submits that returned
    errors = []

    def annotator(user, seed):
        rng = random.Random(seed)
        try:
            barrier.wait()
            handed_with_answer = False
            while True:
                if not handed_with_answer:
                    lease = queue_next(project=project, user=user)
                handed_with_answer = False
                if lease is None:
                    # Someone else's lease may still turn into a skip and free
                    # a slot: stop only when no lease is out.
                    if Lease.objects.filter(project=project).exists():
                        time.sleep(0.01)
                        continue
                    return
                item_id = lease.item_id
                # Record a hand-out after it committed, a release before it
                # commits: the bookkeeping never lags behind the database.
                with lock:
                    handed[user.pk].append(item_id)
                    holders[item_id].add(user.pk)
                    most_at_once[item_id] = max(
                        most_at_once[item_id], len(holders[item_id] | labelled[item_id])
                    )
                if rng.random() < skip_rate:
                    with lock:
                        holders[item_id].discard(user.pk)
                    answer = {"skip": True}
                else:
                    answer = {"label": rng.choice(classes), "seconds": rng.uniform(0.5, 5)}
                if together:
                    _, lease = annotation_submit_and_next(
                        project=project, user=user, sample=lease.item.sample, **answer
                    )
                    handed_with_answer = True
                else:
                    annotation_submit(
                        project=project, user=user, sample=lease.item.sample, **answer
                    )
                if "label" in answer:
                    with lock:
                        holders[item_id].discard(user.pk)
                        labelled[item_id].add(user.pk)
                with lock:
                    submitted[user.pk] += 1
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(f"{user}: {exc!r}")
        finally:
            connection.close()

    workers = [
        threading.Thread(target=annotator, args=(user, index)) for index, user in enumerate(users)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert not any(worker.is_alive() for worker in workers), "an annotator hung"
    assert errors == []

    assert len(most_at_once) == samples
    if not expiring:
        # No sample was ever given to more annotators at once than the overlap.
        assert max(most_at_once.values()) <= overlap
    # Nobody got the same sample twice.
    for user_pk, items in handed.items():
        assert len(items) == len(set(items)), f"user {user_pk} got a sample twice"
    # No label lost: every submit that returned is a row, and nothing else is.
    assert Annotation.objects.filter(project=project).count() == sum(submitted.values())
    assert sum(submitted.values()) == sum(len(items) for items in handed.values())
    labellers = defaultdict(set)
    for sample_id, annotator_id in Annotation.objects.filter(
        project=project, kind=Annotation.Kind.LABEL
    ).values_list("sample_id", "annotator_id"):
        labellers[sample_id].add(annotator_id)
    items = QueueItem.objects.filter(project=project)
    assert items.count() == samples
    assert not Lease.objects.filter(project=project).exists()
    if not expiring:
        # Every sample ended with exactly `overlap` distinct labellers, its item done.
        assert {sample_id: len(labellers[sample_id]) for sample_id in sample_ids} == {
            sample_id: overlap for sample_id in sample_ids
        }
        assert set(items.values_list("state", "claims", "labels_done")) == {
            ("done", overlap, overlap)
        }
    else:
        # Late labels may exceed the overlap; the counters still match the leases
        # (none left) and the labels counted while the item was open.
        for sample_id, state, claims, labels_done in items.values_list(
            "sample_id", "state", "claims", "labels_done"
        ):
            assert state == "done"
            assert claims == labels_done >= overlap
            assert len(labellers[sample_id]) >= labels_done
    return submitted


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="16 concurrent annotators need PostgreSQL's row locks; see the SQLite variant below",
)
def test_sixteen_annotators_on_postgresql_never_exceed_the_overlap():
    submitted = run_annotators(threads=16, samples=200, overlap=2)
    # Everyone took part (the barrier released them together).
    assert sum(1 for count in submitted.values() if count) >= 8


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="16 concurrent annotators need PostgreSQL's row locks; see the SQLite variant below",
)
def test_expiring_leases_under_load_lose_no_label_and_keep_the_counters():
    run_annotators(threads=16, samples=60, overlap=2, lease_seconds=0)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="16 concurrent annotators need PostgreSQL's row locks; see the SQLite variant below",
)
def test_sixteen_annotators_submitting_and_taking_the_next_at_once_never_exceed_the_overlap():
    # The label and the next lease in one transaction: the next pick runs
    # while the submit still holds its locks.
    submitted = run_annotators(threads=16, samples=200, overlap=2, together=True)
    assert sum(1 for count in submitted.values() if count) >= 8


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="16 concurrent annotators need PostgreSQL's row locks; see the SQLite variant below",
)
def test_expiring_leases_with_submit_and_next_lose_no_label():
    run_annotators(threads=16, samples=60, overlap=2, lease_seconds=0, together=True)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite variant")
def test_four_annotators_submitting_and_taking_the_next_on_sqlite_never_exceed_the_overlap():
    run_annotators(threads=4, samples=40, overlap=2, together=True)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite variant")
def test_four_annotators_on_sqlite_never_exceed_the_overlap():
    # IMMEDIATE transactions serialise writers; the busy timeout makes them wait.
    run_annotators(threads=4, samples=40, overlap=2)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite variant")
def test_expiring_leases_on_sqlite_lose_no_label():
    run_annotators(threads=4, samples=20, overlap=2, lease_seconds=0)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks and SKIP LOCKED are PostgreSQL's"
)
def test_labels_skips_releases_and_adjudication_together_keep_the_counters():
    """Labels (alone and with the next sample), skips, leaving the page, the
    expiry task and adjudication on the same few samples at once: nothing raises (a deadlock would: every path
    that waits for a sample's lease and queue rows takes the sample row
    first, and next and the sweep never wait), and every item still open
    keeps the invariant of services/queue.py: claims = live leases + labels,
    labels_done = labels."""
    from labelling.services.queue import lease_release, queue_expire_leases
    from labelling.services.review import sample_adjudicate

    project = ProjectFactory(overlap=3, lease_seconds=3600)
    classes = [
        LabelClassFactory(project=project, name="great"),
        LabelClassFactory(project=project, name="other"),
    ]
    samples = [SampleFactory(project=project) for _ in range(100)]
    queue_add(project=project, sample_ids=[s.pk for s in samples])
    users = [UserFactory() for _ in range(8)]
    for user in users:
        MembershipFactory(project=project, user=user)
    barrier = threading.Barrier(len(users))
    errors = []

    def worker(user, seed):
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(30):
                lease = queue_next(project=project, user=user)
                sample = lease.item.sample if lease else rng.choice(samples)
                action = rng.random()
                if action < 0.3:
                    annotation_submit(
                        project=project, user=user, sample=sample, label=rng.choice(classes)
                    )
                elif action < 0.45:
                    # Its next lease is kept, like a script's.
                    annotation_submit_and_next(
                        project=project, user=user, sample=sample, label=rng.choice(classes)
                    )
                elif action < 0.6:
                    annotation_submit(project=project, user=user, sample=sample, skip=True)
                elif action < 0.75 and lease:
                    lease_release(project=project, user=user, item=lease.item)
                elif action < 0.8:
                    sample_adjudicate(sample=sample, by=user, label=rng.choice(classes))
                elif action < 0.9:
                    queue_expire_leases(project=project)
                # else: keep the lease and move on
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(f"{user}: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(u, i)) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    assert errors == []
    open_items = QueueItem.objects.filter(project=project, state="open")
    assert open_items.exists()  # the mix left some to check
    for item in open_items:
        latest = {}
        for annotator_id, kind in (
            Annotation.objects.filter(sample_id=item.sample_id)
            .order_by("id")
            .values_list("annotator_id", "kind")
        ):
            latest[annotator_id] = kind
        labelled = sum(1 for kind in latest.values() if kind == Annotation.Kind.LABEL)
        leases = Lease.objects.filter(item=item).count()
        assert (item.claims, item.labels_done) == (leases + labelled, labelled)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite variant")
def test_sqlite_writers_of_other_processes_queue_on_a_lock_file():
    # gunicorn's worker processes: a hot-path writer holds an exclusive flock
    # beside the database for its transaction, so the next one wakes when it
    # is released instead of sleeping in SQLite's busy handler.
    import fcntl

    from labelling.services import raw

    path = f"{connection.settings_dict['NAME']}-writer.lock"
    with raw.one_writer(), open(path, "a+b") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(path, "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the block
        fcntl.flock(other, fcntl.LOCK_UN)

"""A flagged sample's queue item is held: nobody is given it to label until
its last flag is resolved, and then it comes back with its priority and reason.

These run on whichever database the suite runs on (SQLite by default,
PostgreSQL with DATABASE_URL), so both "next" paths are covered."""

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from labelling.models import Annotation, Flag, Lease, QueueItem, Sample
from labelling.services.annotations import annotation_submit, annotation_submit_and_next
from labelling.services.cleaning import duplicates_merge, flag_resolve, sample_flag
from labelling.services.queue import (
    annotator_progress,
    queue_add,
    queue_expire_leases,
    queue_next,
    queue_strategy_reprioritise,
)
from labelling.services.review import sample_adjudicate
from leanml_site.models import AuditEvent
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(team):
    """Two samples in the queue: the flagged one first in line."""
    first = SampleFactory(project=team.project, data={"text": "first in line"})
    second = SampleFactory(project=team.project, data={"text": "second in line"})
    queue_add(
        project=team.project,
        sample_ids=[first.pk],
        priority=5,
        strategy="uncertainty",
        reason="The model is unsure",
        score=0.5,
    )
    queue_add(project=team.project, sample_ids=[second.pk], priority=1)
    return first, second


def item_of(sample):
    return QueueItem.objects.get(sample=sample)


def flag(team, sample, kind="corrupt", by="owner", **kwargs):
    return sample_flag(sample=sample, by=team.users[by], kind=kind, **kwargs)


def next_sample(team, who):
    lease = queue_next(project=team.project, user=team.users[who])
    return None if lease is None else lease.item.sample


def test_a_flagged_sample_is_not_given_to_anyone_until_its_flag_is_resolved(team, queued):
    first, second = queued
    raised = flag(team, first)
    item = item_of(first)
    assert item.state == QueueItem.State.HELD
    assert next_sample(team, "expert") == second
    assert next_sample(team, "data_scientist") is None
    progress = annotator_progress(project=team.project, user=team.users["expert"])
    assert progress.remaining == 1  # the second sample, which they hold; not the first

    flag_resolve(flag=raised, by=team.users["owner"], resolution="looked fine after all")
    item.refresh_from_db()
    assert (item.state, item.priority, item.reason, item.strategy, item.score) == (
        QueueItem.State.OPEN,
        5,
        "The model is unsure",
        "uncertainty",
        0.5,
    )
    assert next_sample(team, "data_scientist") == first
    first.refresh_from_db()
    assert first.status == Sample.Status.ACTIVE


def test_it_stays_held_until_the_last_of_two_flags_is_resolved(team, queued):
    first, _ = queued
    corrupt = flag(team, first, "corrupt")
    ambiguous = flag(team, first, "ambiguous", by="expert")
    assert QueueItem.objects.filter(sample=first).count() == 1
    flag_resolve(flag=corrupt, by=team.users["owner"], resolution="text repaired")
    assert item_of(first).state == QueueItem.State.HELD
    assert next_sample(team, "data_scientist") != first
    flag_resolve(flag=ambiguous, by=team.users["owner"], resolution="guideline clarified")
    assert item_of(first).state == QueueItem.State.OPEN
    # The data scientist holds a lease on the second sample already; the
    # owner, who has none, is given the first again.
    assert next_sample(team, "owner") == first


def test_flagging_releases_every_lease_and_gives_the_claims_back(team, queued):
    first, _ = queued
    team.project.overlap = 3
    team.project.save(update_fields=["overlap"])
    for who in ("expert", "data_scientist"):
        assert next_sample(team, who) == first
    assert item_of(first).claims == 2
    flag(team, first)
    item = item_of(first)
    assert (item.state, item.claims, item.labels_done) == (QueueItem.State.HELD, 0, 0)
    assert not Lease.objects.filter(item=item).exists()
    # The held item is never served, not even as a lease someone "still holds".
    assert next_sample(team, "expert") != first
    assert next_sample(team, "owner") != first


def test_a_lease_holder_submitting_after_the_flag_keeps_their_label(team, queued):
    first, _ = queued
    team.project.overlap = 2
    team.project.save(update_fields=["overlap"])
    assert next_sample(team, "expert") == first
    flag(team, first)
    annotation = annotation_submit(
        project=team.project, user=team.users["expert"], sample=first, label="great"
    )
    assert annotation.kind == Annotation.Kind.LABEL
    assert Annotation.objects.filter(sample=first, annotator=team.users["expert"]).count() == 1
    item = item_of(first)
    # Counted on the held item, which stays held (one label of two).
    assert (item.state, item.claims, item.labels_done) == (QueueItem.State.HELD, 1, 1)
    assert next_sample(team, "data_scientist") != first

    # Resolved, it returns for the one label it still needs, not to the expert.
    flag_resolve(flag=Flag.objects.get(), by=team.users["owner"], resolution="fine")
    assert item_of(first).state == QueueItem.State.OPEN
    assert next_sample(team, "owner") == first
    assert queue_next(project=team.project, user=team.users["expert"]).item.sample != first


def test_the_lease_holders_submit_and_next_after_the_flag(team, queued):
    first, second = queued
    assert next_sample(team, "expert") == first
    flag(team, first)
    annotation, lease = annotation_submit_and_next(
        project=team.project, user=team.users["expert"], sample=first, label="other"
    )
    assert annotation.label.name == "other"
    assert lease.item.sample == second
    # Labels reaching the overlap while held make the item done: resolving
    # the flag does not put it back in the queue.
    item = item_of(first)
    assert (item.state, item.labels_done) == (QueueItem.State.DONE, 1)
    flag_resolve(flag=Flag.objects.get(), by=team.users["owner"], resolution="fine")
    assert item_of(first).state == QueueItem.State.DONE
    assert next_sample(team, "owner") is None or next_sample(team, "owner") == second


def test_an_item_whose_overlap_was_lowered_while_held_resumes_as_done(team, queued):
    first, second = queued
    team.project.overlap = 2
    team.project.save(update_fields=["overlap"])
    assert next_sample(team, "expert") == first
    raised = flag(team, first)
    annotation_submit(project=team.project, user=team.users["expert"], sample=first, label="great")
    assert item_of(first).state == QueueItem.State.HELD  # one label of two
    team.project.overlap = 1
    team.project.save(update_fields=["overlap"])

    flag_resolve(flag=raised, by=team.users["owner"], resolution="fine")

    assert item_of(first).state == QueueItem.State.DONE
    event = AuditEvent.objects.filter(action="flag.resolve").get()
    assert event.after["queue"] == {"item": item_of(first).pk, "state": "done"}
    assert next_sample(team, "owner") == second


def test_the_lease_holder_submitting_through_the_page_keeps_their_label(team, queued):
    first, second = queued
    client = team.client("expert")
    assert (
        "first in line"
        in client.get(reverse("labelling:label", args=[team.project.pk])).content.decode()
    )
    flag(team, first)
    response = client.post(
        reverse("labelling:label_submit", args=[team.project.pk]),
        {"sample": first.pk, "label": team.classes[0].pk},
        follow=True,
    )
    assert response.status_code == 200
    assert "second in line" in response.content.decode()
    assert Annotation.objects.get(sample=first).annotator == team.users["expert"]


def test_the_flagger_on_the_labelling_page_skips_and_nobody_gets_the_sample(team, queued):
    first, second = queued
    team.project.overlap = 2
    team.project.save(update_fields=["overlap"])
    client = team.client("expert")
    label_url = reverse("labelling:label", args=[team.project.pk])
    client.get(label_url)
    assert team.client("data_scientist").get(label_url).status_code == 200
    response = client.post(
        reverse("labelling:sample_flag", args=[team.project.pk, first.pk]),
        {"kind": "ambiguous", "note": "two products", "next": f"{label_url}?after_flag={first.pk}"},
        follow=True,
    )
    assert "second in line" in response.content.decode()
    assert Annotation.objects.get(sample=first).kind == Annotation.Kind.SKIP
    assert item_of(first).state == QueueItem.State.HELD
    assert not Lease.objects.filter(item__sample=first).exists()
    # The data scientist had it on screen: reloading gives them the other one.
    body = team.client("data_scientist").get(label_url).content.decode()
    assert "first in line" not in body and "second in line" in body
    # Once resolved, the flagger (who skipped) is not given it again; others are.
    flag_resolve(flag=Flag.objects.get(), by=team.users["owner"], resolution="clarified")
    assert next_sample(team, "expert") in (None, second)
    assert next_sample(team, "owner") == first


def test_queue_add_does_not_queue_a_held_sample_twice(team, queued):
    first, _ = queued
    flag(team, first)
    assert queue_add(project=team.project, sample_ids=[first.pk], priority=9) == 0
    assert QueueItem.objects.filter(sample=first).count() == 1
    # The database refuses a second item beside a held one, too.
    with pytest.raises(IntegrityError), transaction.atomic():
        QueueItem.objects.create(project=team.project, sample=first)


def test_the_flag_and_its_resolution_audit_the_items_state(team, queued):
    first, second = queued
    next_sample(team, "expert")
    raised = flag(team, first, note="garbled")
    event = AuditEvent.objects.filter(action="sample.flag").get()
    item = item_of(first)
    assert event.before["queue"] == {"item": item.pk, "state": "open"}
    assert event.after["queue"] == {"item": item.pk, "state": "held", "leases_released": 1}
    flag_resolve(flag=raised, by=team.users["owner"], resolution="fine")
    event = AuditEvent.objects.filter(action="flag.resolve").get()
    assert event.before["queue"] == {"item": item.pk, "state": "held"}
    assert event.after["queue"] == {"item": item.pk, "state": "open"}
    # A sample with nothing queued: the entries say nothing about the queue.
    done = SampleFactory(project=team.project)
    raised = flag(team, done)
    flag_resolve(flag=raised, by=team.users["owner"], resolution="fine")
    for action in ("sample.flag", "flag.resolve"):
        event = AuditEvent.objects.filter(action=action).order_by("-id").first()
        assert "queue" not in event.after and "queue" not in event.before


def test_merging_duplicates_holds_their_items(team, queued):
    first, second = queued
    team.project.overlap = 2
    team.project.save(update_fields=["overlap"])
    duplicates_merge(project=team.project, by=team.users["owner"], keep=second, duplicates=[first])
    assert item_of(first).state == QueueItem.State.HELD
    assert item_of(second).state == QueueItem.State.OPEN
    assert next_sample(team, "expert") == second
    assert next_sample(team, "owner") == second


def test_expiry_and_reprioritising_leave_a_held_item_consistent(team, queued):
    first, _ = queued
    flag(team, first)
    queue_expire_leases(project=team.project)
    moved = queue_strategy_reprioritise(
        project=team.project, strategy="uncertainty", delta=1, by=team.users["owner"]
    )
    assert moved == 1
    item = item_of(first)
    assert (item.state, item.priority, item.claims) == (QueueItem.State.HELD, 6, 0)


def test_adjudicating_a_held_sample_closes_its_item(team, queued):
    first, _ = queued
    raised = flag(team, first)
    sample_adjudicate(sample=first, by=team.users["owner"], label=team.classes[0])
    assert item_of(first).state == QueueItem.State.DONE
    flag_resolve(flag=raised, by=team.users["owner"], resolution="fine")
    assert item_of(first).state == QueueItem.State.DONE


def test_the_sample_and_queue_pages_say_held(team, queued):
    first, _ = queued
    flag(team, first)
    body = team.client("expert").get(first.get_absolute_url()).content.decode()
    assert "held (flagged)" in body
    response = team.client("expert").get(f"/projects/{team.project.pk}/queue/")
    html = response.content.decode()
    assert response.context["total"] == 1 and response.context["held"] == 1
    mix = {row["strategy"]: (row["n"], row["held"]) for row in response.context["mix"]}
    assert mix == {"uncertainty": (0, 1), "imported": (1, 0)}
    assert 'data-testid="queue-held"' in html and "held (flagged)" in html
    assert first.external_id not in html  # not listed as next in line

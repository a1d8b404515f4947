"""Data migrations of the labelling app, run forward over rows made before them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from labelling.models import Flag, Lease, QueueItem
from labelling.services.queue import queue_add, queue_next
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_HELD = [("labelling", "0003_trim_write_indexes")]
HELD = [("labelling", "0004_queue_item_held")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def test_0004_holds_the_items_of_samples_flagged_before_it(team):
    flagged, resolved, clean = (
        SampleFactory(project=team.project, data={"text": f"sample {n}"}) for n in range(3)
    )
    queue_add(project=team.project, sample_ids=[flagged.pk, resolved.pk, clean.pk])
    team.project.overlap = 1
    team.project.save(update_fields=["overlap"])
    for who in ("expert", "data_scientist", "owner"):  # one lease on each sample
        queue_next(project=team.project, user=team.users[who])
    owner = team.users["owner"]
    Flag.objects.create(sample=flagged, kind="corrupt", created_by=owner)
    Flag.objects.create(
        sample=resolved,
        kind="corrupt",
        created_by=owner,
        resolved_at=timezone.now(),
        resolved_by=owner,
        resolution="fine",
    )
    for sample in (flagged, resolved, clean):
        assert QueueItem.objects.get(sample=sample).claims == 1
    migrate(BEFORE_HELD)

    migrate(HELD)

    held = QueueItem.objects.get(sample=flagged)
    assert (held.state, held.claims, held.labels_done) == (QueueItem.State.HELD, 0, 0)
    assert not Lease.objects.filter(item=held).exists()
    for sample in (resolved, clean):
        item = QueueItem.objects.get(sample=sample)
        assert item.state == QueueItem.State.OPEN
        assert (item.claims, Lease.objects.filter(item=item).count()) == (1, 1)

"""The work queue: which sample each annotator gets next, with leases.

Invariant kept by every function here and by ``annotation_submit``: on an open
``QueueItem``, ``claims`` = live leases on it + annotators whose current
answer on the sample is a label, and ``labels_done`` = the latter alone. The
"next" query only hands out items with ``claims < overlap``, so the overlap is
never exceeded by the queue (a label that arrives after its lease expired is
still kept and may push ``claims`` past the overlap: no label is ever lost).

Lock order, to stay free of deadlocks on PostgreSQL: lease rows first, then the
queue item row (then, where needed, the sample row).
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from leanml_site.audit import audit_record

from ..models import Annotation, Lease, QueueItem

# Expired leases released per transaction: keeps each one short even when a
# whole team walked away at once.
EXPIRE_BATCH = 1000
# "Queue remaining" on the labelling page is counted up to this many, so the
# count stays cheap on a million-item queue ("1000+").
REMAINING_CAP = 1000


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


def _lease_queryset():
    return Lease.objects.select_related("item", "item__sample")


def _release_expired(*, now, project=None) -> int:
    """Delete up to EXPIRE_BATCH expired leases and give their slots back.

    Must run inside a transaction. Leases another transaction is releasing (or
    that an annotator is submitting against right now) are skipped, not waited
    for: whoever holds them settles their counters.
    """
    expired = Lease.objects.filter(expires_at__lte=now)
    if project is not None:
        expired = expired.filter(project=project)
    rows = list(
        expired.select_for_update(skip_locked=True)
        .order_by("id")
        .values_list("id", "item_id")[:EXPIRE_BATCH]
    )
    if not rows:
        return 0
    Lease.objects.filter(id__in=[lease_id for lease_id, _ in rows]).delete()
    per_item = {}
    for _, item_id in rows:
        per_item[item_id] = per_item.get(item_id, 0) + 1
    by_count = {}
    for item_id, count in per_item.items():
        by_count.setdefault(count, []).append(item_id)
    for count, item_ids in by_count.items():
        QueueItem.objects.filter(id__in=item_ids).update(
            claims=Greatest(F("claims") - count, Value(0))
        )
    return len(rows)


def queue_next(*, project, user, exclude_item_ids=()) -> Lease | None:
    """The lease on the sample ``user`` should label next, or None when there is none.

    ``exclude_item_ids`` are items the caller already shows (the labelling
    page passes the card on screen when it prefetches the following one), so
    an annotator holds at most two leases.

    1. A live lease the user already holds (outside ``exclude_item_ids``) is
       returned as it is: reloading the page or asking twice never takes a
       second sample, and the lease is not extended.
    2. Otherwise, in one short transaction, expired leases of the project are
       released first (locked with SKIP LOCKED, deleted, and their items'
       ``claims`` decremented with F()), so abandoned samples return to the
       queue without waiting for the periodic task.
    3. The highest-priority open item (oldest first on ties) with
       ``claims < overlap`` that the user has neither annotated (label or
       skip) nor leased is locked with ``SELECT … FOR UPDATE SKIP LOCKED``.
       The scan walks the partial index ``queue_next`` (project, -priority,
       id WHERE state = 'open'); both exclusions are NOT EXISTS subqueries.
    4. A lease is created and ``claims`` incremented with F() in the same
       transaction.

    Why no item is handed out beyond its overlap:
    - PostgreSQL: two transactions never lock the same item at once (the
      second skips it). If another transaction changed and committed the row
      between our snapshot and our lock, PostgreSQL re-evaluates the WHERE
      clause on the newest row version (EvalPlanQual), so ``claims <
      overlap`` is checked against the committed count, and an item that just
      became full is passed over for the next one.
    - SQLite: the project runs transactions as BEGIN IMMEDIATE, which takes
      the database's write lock up front, so steps 2-4 of concurrent callers
      run one after another and each sees the others' committed claims.
    """
    now = timezone.now()
    exclude_item_ids = [int(pk) for pk in exclude_item_ids if pk is not None]
    held = (
        _lease_queryset()
        .filter(project=project, user=user, expires_at__gt=now)
        .exclude(item_id__in=exclude_item_ids)
        .order_by("id")
        .first()
    )
    if held is not None:
        return held
    with transaction.atomic():
        _release_expired(now=now, project=project)
        item = (
            QueueItem.objects.filter(
                project=project, state=QueueItem.State.OPEN, claims__lt=project.overlap
            )
            .filter(
                ~Exists(Annotation.objects.filter(sample_id=OuterRef("sample_id"), annotator=user)),
                ~Exists(Lease.objects.filter(item_id=OuterRef("pk"), user=user)),
            )
            .exclude(id__in=exclude_item_ids)
            .order_by("-priority", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("sample")
            .first()
        )
        if item is None:
            return None
        lease = Lease.objects.create(
            item=item,
            project=project,
            user=user,
            expires_at=now + timedelta(seconds=project.lease_seconds),
        )
        QueueItem.objects.filter(pk=item.pk).update(claims=F("claims") + 1)
        item.claims += 1
    lease.item = item
    return lease


def lease_release(*, project, user, item) -> bool:
    """Give back ``user``'s lease on ``item`` (they left the page); True if there was one."""
    with transaction.atomic():
        deleted, _ = Lease.objects.filter(project=project, user=user, item=item).delete()
        if deleted:
            QueueItem.objects.filter(pk=item.pk).update(
                claims=Greatest(F("claims") - deleted, Value(0))
            )
    return bool(deleted)


def queue_expire_leases(*, project=None) -> int:
    """Release every expired lease (of one project, or all); returns how many.

    The periodic task calls this so a queue nobody asks for "next" still frees
    its slots; each batch is its own short transaction.
    """
    released = 0
    while True:
        with transaction.atomic():
            batch = _release_expired(now=timezone.now(), project=project)
        released += batch
        if batch < EXPIRE_BATCH:
            return released


@transaction.atomic
def queue_item_update(*, item, by, priority=None, reason=None) -> QueueItem:
    """Reprioritise an open queue item (and optionally say why)."""
    locked = QueueItem.objects.select_for_update().get(pk=item.pk)
    before = {"priority": locked.priority, "reason": locked.reason}
    if priority is not None:
        locked.priority = float(priority)
    if reason is not None:
        locked.reason = reason
    QueueItem.objects.filter(pk=locked.pk).update(priority=locked.priority, reason=locked.reason)
    audit_record(
        actor=by,
        project=locked.project,
        action="queue_item.update",
        target=locked,
        before=before,
        after={"priority": locked.priority, "reason": locked.reason},
    )
    return locked


@dataclass(frozen=True)
class Progress:
    today: int  # samples I labelled today (server time zone)
    total: int  # samples I have labelled in this project
    remaining: int  # open items I could still get, counted up to REMAINING_CAP
    remaining_capped: bool  # True when there are more than ``remaining``


def annotator_progress(*, project, user) -> Progress:
    labelled = Annotation.objects.filter(
        project=project, annotator=user, kind=Annotation.Kind.LABEL
    )
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    today = labelled.filter(created_at__gte=start_of_day).values("sample_id").distinct().count()
    total = labelled.values("sample_id").distinct().count()
    open_for_me = QueueItem.objects.filter(project=project, state=QueueItem.State.OPEN).filter(
        ~Exists(Annotation.objects.filter(sample_id=OuterRef("sample_id"), annotator=user))
    )
    mine = Lease.objects.filter(item_id=OuterRef("pk"), user=user)
    open_for_me = open_for_me.filter(Q(claims__lt=project.overlap) | Exists(mine))
    remaining = open_for_me.values("id")[: REMAINING_CAP + 1].count()
    return Progress(
        today=today,
        total=total,
        remaining=min(remaining, REMAINING_CAP),
        remaining_capped=remaining > REMAINING_CAP,
    )

"""The work queue: which sample each annotator gets next, with leases.

Invariant kept by every function here and by ``annotation_submit``: on an open
(or held) ``QueueItem``, ``claims`` = live leases on it + annotators whose
current answer on the sample is a label, and ``labels_done`` = the latter
alone. The "next" query only hands out open items with ``claims < overlap``,
so the overlap is never exceeded by the queue (a label that arrives after its
lease expired is still kept and may push ``claims`` past the overlap: no label
is ever lost). A held item (its sample is flagged: ``queue_hold``) has no
leases and is handed out to nobody until ``queue_resume``.

Locks, to stay free of deadlocks on PostgreSQL:
- Whatever may *wait* for lease and queue item rows of a sample takes the
  sample row first (``annotation_submit``, ``lease_release``, adjudication),
  so those run one after another per sample.
- "Next" and the expiry sweep never wait: they lock queue items (and leases)
  with SKIP LOCKED and pass over rows someone else holds.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from leanml_site.audit import audit_record

from ..models import Annotation, Lease, QueueItem, Sample
from . import raw

# Expired leases released per transaction: keeps each one short even when a
# whole team walked away at once.
EXPIRE_BATCH = 1000
# "Queue remaining" on the labelling page is counted up to this many, so the
# count stays cheap on a million-item queue ("1000+").
REMAINING_CAP = 1000


def queue_add(
    *, project, sample_ids, priority=0.0, strategy="imported", reason="Imported", score=None
) -> int:
    """Queue samples that have no open or held queue item yet; returns how many were queued."""
    sample_ids = list(sample_ids)
    already = set(
        QueueItem.objects.filter(
            project=project, sample_id__in=sample_ids, state__in=QueueItem.QUEUED
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


def _locked_item(*, sample_id, state):
    """The sample's queue item in ``state``, locked (at most one is open or held)."""
    return QueueItem.objects.select_for_update().filter(sample_id=sample_id, state=state).first()


def queue_hold(*, sample_id) -> dict | None:
    """Hold ``sample_id``'s open queue item while the sample is flagged: the
    "next" query only hands out open items, so nobody is given it. Every
    lease on it is released and its claim given back (whoever still has the
    sample on screen may submit: ``annotation_submit`` counts the label on
    the held item). Returns what changed, for the caller's audit entry, or
    None when the sample had no open item.

    The caller holds the sample row's lock (``sample_flag``), as every writer
    of a sample's queue state does: see the module's lock notes. The item is
    locked before its leases are read, so a lease "next" took on it just
    before is seen and released, and none can be taken after.
    """
    item = _locked_item(sample_id=sample_id, state=QueueItem.State.OPEN)
    if item is None:
        return None
    released, _ = Lease.objects.filter(item_id=item.pk).delete()
    QueueItem.objects.filter(pk=item.pk).update(
        state=QueueItem.State.HELD, claims=Greatest(F("claims") - released, Value(0))
    )
    return {"item": item.pk, "state": QueueItem.State.HELD, "leases_released": released}


def queue_resume(*, sample_id, overlap) -> dict | None:
    """Give ``sample_id``'s held queue item back to the queue (its last flag
    was resolved), with the priority and reason it had: open if it still
    needs labels, done if labels given while it was held reached
    ``overlap``. Returns what changed, for the caller's audit entry, or None
    when nothing was held. The caller holds the sample row's lock."""
    item = _locked_item(sample_id=sample_id, state=QueueItem.State.HELD)
    if item is None:
        return None
    state = QueueItem.State.DONE if item.labels_done >= overlap else QueueItem.State.OPEN
    QueueItem.objects.filter(pk=item.pk).update(state=state)
    return {"item": item.pk, "state": state}


def _expired_sql(*, project_id):
    where = "l.expires_at <= %(now)s"
    if project_id is not None:
        where += " AND l.project_id = %(project)s"
    # Lock the lease and its queue item, skipping rows someone holds: the
    # sweep never waits, so it cannot close a cycle of waiting transactions.
    lock = " FOR UPDATE OF l, q SKIP LOCKED" if connection.vendor == "postgresql" else ""
    return (
        "SELECT l.id, l.item_id FROM labelling_lease l"  # noqa: S608 (no input in it)
        " JOIN labelling_queueitem q ON q.id = l.item_id"
        f" WHERE {where} ORDER BY l.id LIMIT {EXPIRE_BATCH}{lock}"
    )


def _release_expired(cursor, *, now, project_id=None) -> int:
    """Delete up to EXPIRE_BATCH expired leases and give their slots back.

    Must run inside a transaction. Leases another transaction is releasing (or
    that an annotator is submitting against right now) are skipped, not waited
    for: whoever holds them settles their counters.
    """
    cursor.execute(
        _expired_sql(project_id=project_id),
        {"now": raw.adapt_datetime(now), "project": project_id},
    )
    rows = cursor.fetchall()
    if not rows:
        return 0
    lease_ids = [lease_id for lease_id, _ in rows]
    cursor.execute(
        f"DELETE FROM labelling_lease WHERE id IN ({', '.join(['%s'] * len(lease_ids))})",  # noqa: S608
        lease_ids,
    )
    per_item = Counter(item_id for _, item_id in rows)
    by_count = {}
    for item_id, count in per_item.items():
        by_count.setdefault(count, []).append(item_id)
    for count, item_ids in by_count.items():
        cursor.execute(
            "UPDATE labelling_queueitem SET claims = CASE WHEN claims > %s THEN claims - %s"  # noqa: S608
            f" ELSE 0 END WHERE id IN ({', '.join(['%s'] * len(item_ids))})",
            [count, count, *item_ids],
        )
    return len(rows)


_LEASE_COLS = [f.attname for f in Lease._meta.concrete_fields]

# "Next" on PostgreSQL: one statement, so one round trip and no explicit
# transaction (see queue_next for why it is safe). Its CTEs:
#   held     a live lease the user already holds (outside the excluded items);
#   expired  up to EXPIRE_BATCH expired leases of the project, locked with
#            their items, SKIP LOCKED; gone/freed delete them and give the
#            slots back;
#   pick     unless a lease is held: the best open item with room, that the
#            user neither answered nor leased, locked FOR UPDATE SKIP LOCKED
#            (an item the sweep frees in this statement is not a candidate:
#            one statement must not update a row twice; the caller runs the
#            statement again when the sweep was all it found);
#   taken    the new lease; bumped: the item's claim.
# The result is always one row: how many leases were swept, then the lease,
# item and sample columns (NULL when there is nothing for the user).
_NEXT_POSTGRESQL = f"""
WITH held AS (
    SELECT {raw.columns(Lease, "l")} FROM labelling_lease l
    WHERE l.project_id = %(project)s AND l.user_id = %(user)s
      AND l.expires_at > %(now)s AND l.item_id <> ALL(%(exclude)s::bigint[])
    ORDER BY l.id LIMIT 1
), expired AS (
    SELECT l.id, l.item_id FROM labelling_lease l
    JOIN labelling_queueitem q ON q.id = l.item_id
    WHERE l.project_id = %(project)s AND l.expires_at <= %(now)s
    ORDER BY l.id LIMIT {EXPIRE_BATCH}
    FOR UPDATE OF l, q SKIP LOCKED
), gone AS (
    DELETE FROM labelling_lease l USING expired e WHERE l.id = e.id RETURNING l.item_id
), freed AS (
    UPDATE labelling_queueitem q SET claims = GREATEST(q.claims - g.n, 0)
    FROM (SELECT item_id, count(*) AS n FROM gone GROUP BY item_id) g
    WHERE q.id = g.item_id
), pick AS (
    SELECT q.id FROM labelling_queueitem q
    WHERE q.project_id = %(project)s AND q.state = 'open' AND q.claims < %(overlap)s
      AND NOT EXISTS (
          SELECT 1 FROM labelling_annotation a
          WHERE a.sample_id = q.sample_id AND a.annotator_id = %(user)s)
      AND NOT EXISTS (
          SELECT 1 FROM labelling_lease l WHERE l.item_id = q.id AND l.user_id = %(user)s)
      AND q.id <> ALL(%(exclude)s::bigint[])
      AND NOT EXISTS (SELECT 1 FROM held)
      AND q.id NOT IN (SELECT item_id FROM expired)
    ORDER BY q.priority DESC, q.id
    LIMIT 1
    FOR UPDATE OF q SKIP LOCKED
), taken AS (
    INSERT INTO labelling_lease (item_id, project_id, user_id, created_at, expires_at)
    SELECT id, %(project)s, %(user)s, %(now)s, %(expires)s FROM pick
    RETURNING {raw.columns(Lease, "labelling_lease")}
), bumped AS (
    UPDATE labelling_queueitem q SET claims = q.claims + 1 FROM pick WHERE q.id = pick.id
    RETURNING {raw.columns(QueueItem, "q")}
)
SELECT (SELECT count(*) FROM gone), x.* FROM (SELECT 1) AS one LEFT JOIN (
    SELECT {raw.columns(Lease, "t")}, {raw.columns(QueueItem, "b")}, {raw.columns(Sample, "s")}
    FROM taken t JOIN bumped b ON b.id = t.item_id JOIN labelling_sample s ON s.id = b.sample_id
    UNION ALL
    SELECT {raw.columns(Lease, "h")}, {raw.columns(QueueItem, "q")}, {raw.columns(Sample, "s")}
    FROM held h JOIN labelling_queueitem q ON q.id = h.item_id
    JOIN labelling_sample s ON s.id = q.sample_id
) AS x ON true
"""  # noqa: S608 (interpolates column names only; every value is a parameter)

_ITEM_AND_SAMPLE = f"{raw.columns(QueueItem, 'q')}, {raw.columns(Sample, 's')}"


def _lease_from_row(row, conn):
    """Lease (with ``.item`` and ``.item.sample``) from lease + item + sample columns."""
    n_lease, n_item = len(Lease._meta.concrete_fields), len(QueueItem._meta.concrete_fields)
    lease = raw.instance(Lease, row[:n_lease], conn=conn)
    item = raw.instance(QueueItem, row[n_lease : n_lease + n_item], conn=conn)
    item.sample = raw.instance(Sample, row[n_lease + n_item :], conn=conn)
    lease.item = item
    return lease


def _next_params(*, project, user, exclude, now):
    return {
        "project": project.pk,
        "user": user.pk,
        "now": now,
        "expires": now + timedelta(seconds=project.lease_seconds),
        "overlap": project.overlap,
        "exclude": exclude,
    }


def queue_next(*, project, user, exclude_item_ids=()) -> Lease | None:
    """The lease on the sample ``user`` should label next, or None when there is none.

    ``exclude_item_ids`` are items the caller already shows (the labelling
    page passes the card on screen when it prefetches the following one), so
    an annotator holds at most two leases.

    1. A live lease the user already holds (outside ``exclude_item_ids``) is
       returned as it is: reloading the page or asking twice never takes a
       second sample, and the lease is not extended.
    2. Otherwise expired leases of the project are released (locked with
       SKIP LOCKED, deleted, and their items' ``claims`` decremented), so
       abandoned samples return to the queue without waiting for the
       periodic task.
    3. The highest-priority open item (oldest first on ties) with
       ``claims < overlap`` that the user has neither annotated (label or
       skip) nor leased is locked with ``SELECT … FOR UPDATE SKIP LOCKED``.
       The scan walks the partial index ``queue_next`` (project, -priority,
       id WHERE state = 'open'); both exclusions are NOT EXISTS subqueries.
    4. A lease is created and ``claims`` incremented in the same transaction.

    Why no item is handed out beyond its overlap:
    - PostgreSQL: steps 1-4 are one statement (one round trip, its own
      transaction). Two transactions never lock the same item at once (the
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
    exclude = [int(pk) for pk in exclude_item_ids if pk is not None]
    conn = raw.db()
    if conn.vendor == "postgresql":
        with raw.prepared_cursor(conn) as cursor:
            return _next_postgresql(
                cursor, conn, project=project, user=user, exclude=exclude, now=now
            )
    return _queue_next_portable(project=project, user=user, exclude=exclude, now=now)


def queue_next_in_transaction(cursor, *, project, user, exclude_item_ids=(), now, conn):
    """``queue_next`` inside the caller's transaction, on its cursor: what
    ``annotation_submit_and_next`` runs after the label's writes, so the
    label and the next lease commit together (one commit instead of two).
    Returns (lease or None, ask_again): with ``ask_again`` the caller calls
    ``queue_next`` once more after its commit.

    The caller must be inside ``transaction.atomic()`` and, on SQLite, hold
    the write lock (BEGIN IMMEDIATE, as every transaction of the project
    does). Same answers as ``queue_next``; on PostgreSQL the same statement,
    which takes every row lock with SKIP LOCKED. Run after locks the caller
    already holds (its sample row, that sample's queue items), it must add
    no wait, or the two could close a cycle with another submit:

    - It updates no queue item the caller's transaction updated before,
      except items of the caller's own sample. PostgreSQL re-checks a
      row's foreign keys when the transaction that created its current
      version updates it again (Django's deferred constraints: at commit),
      and the check on ``queueitem.sample_id`` takes a key-share lock on the
      sample row: a wait for whoever submits that sample, while that
      submit may be waiting for a lease this transaction swept.
    - Hence no second run in the same transaction when the first only swept
      expired leases (``queue_next`` runs it again at once, as a statement
      of its own, and may pick an item the sweep freed): ``ask_again``
      instead, and the caller's commit comes first.
    """
    exclude = [int(pk) for pk in exclude_item_ids if pk is not None]
    if conn.vendor == "postgresql":
        params = _next_params(project=project, user=user, exclude=exclude, now=now)
        lease, swept = _pick_postgresql(cursor, conn, params)
        return lease, lease is None and swept
    params = _portable_params(project=project, user=user, now=now)
    held = _held_portable(cursor, params, exclude)
    if held is not None:
        return held, False
    return _take_portable(
        cursor, params, project=project, user=user, exclude=exclude, now=now
    ), False


def _next_postgresql(cursor, conn, *, project, user, exclude, now):
    params = _next_params(project=project, user=user, exclude=exclude, now=now)
    lease, swept = _pick_postgresql(cursor, conn, params)
    if lease is None and swept:
        # Only expired leases were found: their items are free now. (A
        # statement of its own, hence a transaction of its own: see
        # queue_next_in_transaction.)
        lease, _ = _pick_postgresql(cursor, conn, params)
    return lease


def _pick_postgresql(cursor, conn, params):
    """One run of the "next" statement: (lease or None, whether it swept expired leases)."""
    cursor.execute(_NEXT_POSTGRESQL, params)
    swept, *row = cursor.fetchone()
    return (None if row[0] is None else _lease_from_row(row, conn)), bool(swept)


def _not_in(column, values, params):
    """`` AND column NOT IN (...)`` with named placeholders (nothing for no values)."""
    if not values:
        return ""
    names = []
    for index, value in enumerate(values):
        params[f"x{index}"] = value
        names.append(f"%(x{index})s")
    return f" AND {column} NOT IN ({', '.join(names)})"


def _portable_params(*, project, user, now):
    return {
        "project": project.pk,
        "user": user.pk,
        "now": raw.adapt_datetime(now),
        "overlap": project.overlap,
    }


def _queue_next_portable(*, project, user, exclude, now):
    """Steps 1-4 as separate statements; correct where writers are serialised
    (SQLite's BEGIN IMMEDIATE). The held-lease check reads outside the write
    lock: asking again for the same sample takes no lock."""
    params = _portable_params(project=project, user=user, now=now)
    with connection.cursor() as cursor:
        held = _held_portable(cursor, params, exclude)
    if held is not None:
        return held
    with raw.one_writer(), transaction.atomic(), connection.cursor() as cursor:
        return _take_portable(cursor, params, project=project, user=user, exclude=exclude, now=now)


def _held_portable(cursor, params, exclude):
    """Step 1: the user's live lease outside ``exclude``, or None."""
    params = dict(params)
    cursor.execute(
        f"SELECT {raw.columns(Lease, 'l')}, {_ITEM_AND_SAMPLE} FROM labelling_lease l"  # noqa: S608
        " JOIN labelling_queueitem q ON q.id = l.item_id"
        " JOIN labelling_sample s ON s.id = q.sample_id"
        " WHERE l.project_id = %(project)s AND l.user_id = %(user)s"
        f" AND l.expires_at > %(now)s{_not_in('l.item_id', exclude, params)}"
        " ORDER BY l.id LIMIT 1",
        params,
    )
    row = cursor.fetchone()
    return None if row is None else _lease_from_row(row, cursor.db)


def _take_portable(cursor, params, *, project, user, exclude, now):
    """Steps 2-4, inside a transaction holding the write lock."""
    params = dict(params)
    expires_at = now + timedelta(seconds=project.lease_seconds)
    _release_expired(cursor, now=now, project_id=project.pk)
    cursor.execute(
        f"SELECT {_ITEM_AND_SAMPLE} FROM labelling_queueitem q"  # noqa: S608
        " JOIN labelling_sample s ON s.id = q.sample_id"
        " WHERE q.project_id = %(project)s AND q.state = 'open'"
        " AND q.claims < %(overlap)s"
        " AND NOT EXISTS (SELECT 1 FROM labelling_annotation a"
        "  WHERE a.sample_id = q.sample_id AND a.annotator_id = %(user)s)"
        " AND NOT EXISTS (SELECT 1 FROM labelling_lease l"
        "  WHERE l.item_id = q.id AND l.user_id = %(user)s)"
        f"{_not_in('q.id', exclude, params)}"
        " ORDER BY q.priority DESC, q.id LIMIT 1",
        params,
    )
    row = cursor.fetchone()
    if row is None:
        return None
    item_id = row[0]
    cursor.execute(
        "INSERT INTO labelling_lease (item_id, project_id, user_id, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        [item_id, project.pk, user.pk, params["now"], raw.adapt_datetime(expires_at)],
    )
    (lease_id,) = cursor.fetchone()
    cursor.execute("UPDATE labelling_queueitem SET claims = claims + 1 WHERE id = %s", [item_id])
    values = {"id": lease_id, "item_id": item_id, "project_id": project.pk, "user_id": user.pk}
    values.update(created_at=now, expires_at=expires_at)
    lease = raw.instance(Lease, [values[name] for name in _LEASE_COLS])
    lease.item = raw.instance(QueueItem, row[: len(QueueItem._meta.concrete_fields)])
    lease.item.claims += 1
    lease.item.sample = raw.instance(Sample, row[len(QueueItem._meta.concrete_fields) :])
    return lease


def lease_release(*, project, user, item) -> bool:
    """Give back ``user``'s lease on ``item`` (they left the page); True if there was one."""
    with transaction.atomic():
        # The sample row first, like annotation_submit: see the module's lock notes.
        Sample.objects.select_for_update().filter(pk=item.sample_id).values_list("id").first()
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
    project_id = project.pk if project is not None else None
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            batch = _release_expired(cursor, now=timezone.now(), project_id=project_id)
        released += batch
        if batch < EXPIRE_BATCH:
            return released


@transaction.atomic
def queue_item_update(*, item, by, priority=None, reason=None) -> QueueItem:
    """Reprioritise an open (or held) queue item (and optionally say why)."""
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


@transaction.atomic
def queue_strategy_reprioritise(*, project, strategy, delta, by) -> int:
    """Move every open (or held) item of one strategy up (``delta`` > 0) or
    down the queue; returns how many moved. The queue page's "more of this /
    less of this" for a surfacing strategy: a held item returns to the queue
    where its strategy is by then."""
    delta = float(delta)
    items = QueueItem.objects.filter(project=project, state__in=QueueItem.QUEUED, strategy=strategy)
    moved = items.update(priority=F("priority") + delta)
    audit_record(
        actor=by,
        project=project,
        action="queue.reprioritise",
        after={"strategy": strategy, "delta": delta, "items": moved},
    )
    return moved

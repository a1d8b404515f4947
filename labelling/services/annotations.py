"""Recording labels: append-only annotations and the queue counters they move."""

import json
import math

from django.db import transaction
from django.utils import timezone

from leanml_site.errors import Refusal

from ..models import Annotation, LabelClass, Lease, Sample
from . import raw
from .consensus import consensus_of
from .queue import queue_next, queue_next_in_transaction

# Longer than any honest look at one sample: a tab left open over lunch
# would otherwise dominate the time-per-label statistics.
MAX_SECONDS = 3600.0


class AnnotationError(Refusal):
    """A refused submission; ``field`` names the input that was wrong."""


def label_class_resolve(*, project, value) -> LabelClass:
    """The project's label class for ``value`` (a LabelClass, an id, or a name)."""
    if isinstance(value, LabelClass):
        if value.project_id == project.id:
            return value
        value = value.name
    classes = list(project.label_classes.all())
    text = str(value).strip()
    for label_class in classes:
        if label_class.name == text:
            return label_class
    if text.isdigit():
        for label_class in classes:
            if label_class.pk == int(text):
                return label_class
    names = ", ".join(c.name for c in classes) or "none yet"
    raise AnnotationError(
        f"Unknown label '{value}': this project's labels are {names}.", field="label"
    )


def _clean_seconds(seconds):
    if seconds is None or seconds == "":
        return None
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise AnnotationError(
            f"seconds must be a number of seconds, not {seconds!r}.", field="seconds"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise AnnotationError(f"seconds must be zero or more, not {seconds!r}.", field="seconds")
    return min(seconds, MAX_SECONDS)


def _label_lookup(project, value):
    """(name, id) to look ``value`` up by, with label_class_resolve's rules:
    a name first, then (for digits) an id."""
    if isinstance(value, LabelClass):
        value = value.name
    text = str(value).strip()
    try:
        label_id = int(text) if text.isdigit() and len(text) < 19 else None
    except ValueError:  # digits int() refuses, such as "²"
        label_id = None
    return text, label_id


# Lock the sample row and read it, resolving the label in the same trip.
# Every writer of a sample's annotations, adjudications and queue state
# takes this lock first (see services/queue.py), so what the following
# statements read cannot change under us.
_SAMPLE_SQL = """
SELECT s.external_id, s.revision, s.consensus_state, s.consensus_label_id,
    (SELECT c.id FROM labelling_labelclass c
     WHERE c.project_id = %(project)s AND (c.name = %(label_name)s OR c.id = %(label_id)s)
     ORDER BY CASE WHEN c.name = %(label_name)s THEN 0 ELSE 1 END LIMIT 1),
    (SELECT c.name FROM labelling_labelclass c
     WHERE c.project_id = %(project)s AND (c.name = %(label_name)s OR c.id = %(label_id)s)
     ORDER BY CASE WHEN c.name = %(label_name)s THEN 0 ELSE 1 END LIMIT 1)
FROM labelling_sample s
WHERE s.id = %(sample)s AND s.project_id = %(project)s
"""

# PostgreSQL: the user's leases on the sample's items are deleted, and the
# open item, the sample's annotations and its latest adjudication read, in
# one statement. Rows: one per deleted lease (at least one).
_LEASES_AND_ROWS_POSTGRESQL = """
WITH gone AS (
    DELETE FROM labelling_lease l USING labelling_queueitem q
    WHERE l.user_id = %(user)s AND l.item_id = q.id AND q.sample_id = %(sample)s
    RETURNING l.id, l.item_id, l.created_at
)
SELECT
    (SELECT q.id FROM labelling_queueitem q
     WHERE q.sample_id = %(sample)s AND q.state IN ('open', 'held') ORDER BY q.id LIMIT 1),
    (SELECT array_agg(a.annotator_id ORDER BY a.id) FROM labelling_annotation a
     WHERE a.sample_id = %(sample)s),
    (SELECT array_agg(a.label_id ORDER BY a.id) FROM labelling_annotation a
     WHERE a.sample_id = %(sample)s),
    (SELECT j.label_id FROM labelling_adjudication j
     WHERE j.sample_id = %(sample)s ORDER BY j.id DESC LIMIT 1),
    (SELECT j.gold FROM labelling_adjudication j
     WHERE j.sample_id = %(sample)s ORDER BY j.id DESC LIMIT 1),
    g.item_id, g.created_at
FROM (SELECT 1) AS one LEFT JOIN gone g ON true
ORDER BY g.id
"""

# PostgreSQL: every write of a submit in one statement. The queue counters
# move relative to the row's current values, so "next" and the expiry sweep
# (which touch claims without the sample lock) are never overwritten.
_WRITE_POSTGRESQL = """
WITH ann AS (
    INSERT INTO labelling_annotation
        (project_id, sample_id, annotator_id, kind, label_id, origin, seconds, revision,
         created_at)
    VALUES (%(project)s, %(sample)s, %(user)s, %(kind)s, %(label)s, 'human', %(seconds)s,
            %(revision)s, %(now)s)
    RETURNING id
), open_item AS (
    UPDATE labelling_queueitem SET
        claims = GREATEST(claims - %(freed)s + %(delta)s, 0),
        labels_done = GREATEST(labels_done + %(delta)s, 0),
        state = CASE WHEN labels_done + %(delta)s >= %(overlap)s THEN 'done' ELSE state END
    WHERE id = %(item)s
), closed_items AS (
    UPDATE labelling_queueitem SET claims = GREATEST(claims - 1, 0)
    WHERE id = ANY(%(closed)s::bigint[])
), consensus AS (
    UPDATE labelling_sample SET consensus_state = %(state)s, consensus_label_id = %(consensus)s
    WHERE id = %(sample)s AND %(changed)s
), audit AS (
    INSERT INTO leanml_site_auditevent
        (created_at, actor_id, project_id, action, target_type, target_id, before, after)
    SELECT %(now)s, %(user)s, %(project)s, %(action)s, %(target_type)s, ann.id::text,
        %(before)s::jsonb, %(after)s::jsonb
    FROM ann
)
SELECT id FROM ann
"""


def annotation_submit(*, project, user, sample, label=None, skip=False, seconds=None) -> Annotation:
    """Record ``user``'s label (or skip) for ``sample`` as a new row.

    ``sample`` is a Sample or a sample id; an id not in ``project`` is
    refused with ``field="sample"``.

    Nothing is updated in place: relabelling appends a row and the latest row
    per annotator is their current answer. Queue counters (see
    ``services/queue.py`` for the invariant) move like this:

    1. The sample row is locked (every writer of a sample's labels, leases
       and queue state takes it first), and the label resolved.
    2. The user's leases on the sample's items are deleted: each frees one
       claim. The open item (or the held one, while the sample is flagged:
       a label given to a card already on screen still counts on it), the
       sample's annotations and its latest adjudication are read.
    3. The annotation row is appended.
    4. Counters: a first label from this annotator adds a claim and a done
       label (with step 2 that turns their lease into a done slot, and a label
       that arrives after its lease expired still counts, even past the
       overlap); a skip from someone holding a lease only frees the slot; a
       relabel changes nothing; a skip replacing their label gives both back.
       The item is done once ``labels_done`` reaches the overlap; otherwise
       it keeps its state (a held item stays held).
    5. Consensus is recomputed from the rows read in step 2 plus the new one,
       and the change audited, in the same transaction.

    On PostgreSQL steps 1, 2 and 3-5 are one statement each.

    ``seconds`` is the time spent as measured by the page; when the page could
    not measure it (no JavaScript), the time since the lease was handed out.
    """
    annotation, _ = _submit(
        project=project, user=user, sample=sample, label=label, skip=skip, seconds=seconds
    )
    return annotation


def annotation_submit_and_next(
    *, project, user, sample, label=None, skip=False, seconds=None, exclude_item_ids=()
) -> tuple[Annotation, Lease | None]:
    """``annotation_submit``, then ``queue_next`` for the same user, in one
    transaction: the annotation and the lease on the sample to label next
    (None when nothing is left), what an annotator's script asks for per
    label. A refused submission (``AnnotationError``) writes nothing and
    hands out nothing.

    The next sample is chosen after the label's writes, so it is never the
    sample just answered, and exactly as ``queue_next`` chooses (a live lease
    the user still holds first, ``exclude_item_ids`` passed over, the
    overlap kept). On PostgreSQL that is the same single statement, run on
    the submit's connection inside its transaction; on SQLite inside the
    same BEGIN IMMEDIATE transaction. Either way the pair usually costs one
    commit instead of two. When that pick only released expired leases, it
    is asked again after the commit, as ``queue_next`` would
    (``queue_next_in_transaction`` says why not before).
    """
    return _submit(
        project=project,
        user=user,
        sample=sample,
        label=label,
        skip=skip,
        seconds=seconds,
        then_next=tuple(exclude_item_ids),
    )


def _submit(*, project, user, sample, label, skip, seconds, then_next=None):
    """``annotation_submit``; with ``then_next`` (excluded item ids) also
    ``queue_next_in_transaction`` before the commit. (annotation, lease or None)."""
    given = sample if isinstance(sample, Sample) else None
    if given is not None and given.project_id != project.id:
        raise AnnotationError(
            f"Sample {given.pk} does not belong to project {project.pk}.", field="sample"
        )
    sample_id = given.pk if given is not None else sample
    if not isinstance(sample_id, int) or not -(1 << 63) <= sample_id < 1 << 63:
        raise AnnotationError(f"No sample with id {sample_id} in this project.", field="sample")
    label_name, label_id = (None, None) if label is None else _label_lookup(project, label)
    conn = raw.db()
    postgresql = conn.vendor == "postgresql"
    now = timezone.now()

    with raw.one_writer(conn), transaction.atomic(), raw.prepared_cursor(conn) as cursor:
        # 1. Lock and read the sample; resolve the label.
        cursor.execute(
            _SAMPLE_SQL + (" FOR UPDATE OF s" if postgresql else ""),
            {
                "project": project.pk,
                "sample": sample_id,
                "label_name": label_name,
                "label_id": label_id,
            },
        )
        found = cursor.fetchone()
        if found is None:
            raise AnnotationError(f"No sample with id {sample_id} in this project.", field="sample")
        external_id, revision, old_state, old_label, class_id, class_name = found
        if skip and label is not None:
            raise AnnotationError("Give a label or skip, not both.", field="label")
        if not skip and label is None:
            raise AnnotationError("Choose a label (or skip the sample).", field="label")
        if not skip and class_id is None:
            label_class_resolve(project=project, value=label)  # raises, naming the labels
        seconds = _clean_seconds(seconds)
        kind = Annotation.Kind.SKIP if skip else Annotation.Kind.LABEL
        if skip:
            class_id = class_name = None

        # 2. Leases out, rows in.
        params = {"user": user.pk, "sample": sample_id}
        if postgresql:
            cursor.execute(_LEASES_AND_ROWS_POSTGRESQL, params)
            rows = cursor.fetchall()
            open_item, annotators, labels, adjudicated, gold = rows[0][:5]
            leases = [(item_id, created) for *_, item_id, created in rows if item_id is not None]
            answers = list(zip(annotators or [], labels or [], strict=True))
        else:
            open_item, leases, answers, adjudicated, gold = _leases_and_rows_portable(
                cursor, params
            )

        previous = None
        for annotator_id, answer in answers:
            if annotator_id == user.pk:
                previous = Annotation.Kind.LABEL if answer is not None else Annotation.Kind.SKIP
        had_label = previous == Annotation.Kind.LABEL
        has_label = kind == Annotation.Kind.LABEL
        open_leases = [created for item_id, created in leases if item_id == open_item]
        closed_items = [item_id for item_id, _ in leases if item_id != open_item]
        if seconds is None and open_leases:
            started = raw.convert_datetime(open_leases[0], Lease, "created_at", conn=conn)
            seconds = _clean_seconds((now - started).total_seconds())
        done_delta = int(has_label and not had_label) - int(had_label and not has_label)

        # 5 (computed before the write, applied with it).
        state, consensus_label = consensus_of(
            [*answers, (user.pk, class_id)],
            overlap=project.overlap,
            adjudication=(adjudicated, gold) if adjudicated is not None else None,
        )
        after = {"sample": external_id, "kind": kind, "label": class_name, "seconds": seconds}

        # 3-5. Write.
        params = {
            "project": project.pk,
            "sample": sample_id,
            "user": user.pk,
            "kind": str(kind),
            "label": class_id,
            "seconds": seconds,
            "revision": revision,
            "now": raw.adapt_datetime(now, conn=conn),
            "freed": len(open_leases),
            "delta": done_delta,
            "overlap": project.overlap,
            "item": open_item if (open_leases or done_delta) else None,
            "closed": closed_items,
            "state": str(state),
            "consensus": consensus_label,
            "changed": (state, consensus_label) != (old_state, old_label),
            "action": "annotation.create",
            "target_type": Annotation._meta.label_lower,
            "before": json.dumps({"kind": str(previous)}) if previous else None,
            "after": json.dumps(after),
        }
        if postgresql:
            cursor.execute(_WRITE_POSTGRESQL, params)
            (annotation_id,) = cursor.fetchone()
        else:
            annotation_id = _write_portable(cursor, params)

        lease, ask_again = None, False
        if then_next is not None:
            lease, ask_again = queue_next_in_transaction(
                cursor, project=project, user=user, exclude_item_ids=then_next, now=now, conn=conn
            )
    if ask_again:
        # Only expired leases were swept; their items are free once committed.
        lease = queue_next(project=project, user=user, exclude_item_ids=then_next)

    annotation = raw.instance(
        Annotation,
        [annotation_id, project.pk, sample_id, user.pk, kind, class_id, "human", seconds]
        + [revision, now],
        conn=conn,
    )
    annotation.sample = given or raw.instance(
        Sample,
        [sample_id, project.pk, external_id, revision, state, consensus_label],
        fields=_SAMPLE_FIELDS,
        conn=conn,
    )
    annotation.label = (
        None
        if class_id is None
        else raw.instance(
            LabelClass, [class_id, project.pk, class_name], fields=_CLASS_FIELDS, conn=conn
        )
    )
    return annotation, lease


_SAMPLE_FIELDS = ("id", "project_id", "external_id", "revision", "consensus_state")
_SAMPLE_FIELDS += ("consensus_label_id",)
_CLASS_FIELDS = ("id", "project_id", "name")


def _leases_and_rows_portable(cursor, params):
    cursor.execute(
        "SELECT l.id, l.item_id, l.created_at FROM labelling_lease l"
        " JOIN labelling_queueitem q ON q.id = l.item_id"
        " WHERE l.user_id = %(user)s AND q.sample_id = %(sample)s ORDER BY l.id",
        params,
    )
    leases = cursor.fetchall()
    if leases:
        cursor.execute(
            f"DELETE FROM labelling_lease WHERE id IN ({', '.join(['%s'] * len(leases))})",  # noqa: S608
            [lease_id for lease_id, _, _ in leases],
        )
    cursor.execute(
        "SELECT id FROM labelling_queueitem WHERE sample_id = %(sample)s"
        " AND state IN ('open', 'held')"
        " ORDER BY id LIMIT 1",
        params,
    )
    open_item = next(iter(cursor.fetchone() or ()), None)
    cursor.execute(
        "SELECT annotator_id, label_id FROM labelling_annotation"
        " WHERE sample_id = %(sample)s ORDER BY id",
        params,
    )
    answers = cursor.fetchall()
    cursor.execute(
        "SELECT label_id, gold FROM labelling_adjudication WHERE sample_id = %(sample)s"
        " ORDER BY id DESC LIMIT 1",
        params,
    )
    adjudicated, gold = cursor.fetchone() or (None, None)
    leases = [(item_id, created) for _, item_id, created in leases]
    return open_item, leases, answers, adjudicated, gold


def _write_portable(cursor, params):
    closed = params["closed"]
    # Only scalars: Django's SQLite backend quotes every parameter it is given
    # when it logs a query.
    params = {key: value for key, value in params.items() if key != "closed"}
    cursor.execute(
        "INSERT INTO labelling_annotation"
        " (project_id, sample_id, annotator_id, kind, label_id, origin, seconds, revision,"
        " created_at) VALUES (%(project)s, %(sample)s, %(user)s, %(kind)s, %(label)s,"
        " 'human', %(seconds)s, %(revision)s, %(now)s) RETURNING id",
        params,
    )
    (annotation_id,) = cursor.fetchone()
    if params["item"] is not None:
        cursor.execute(
            "UPDATE labelling_queueitem SET"
            " claims = CASE WHEN claims - %(freed)s + %(delta)s > 0"
            "  THEN claims - %(freed)s + %(delta)s ELSE 0 END,"
            " labels_done = CASE WHEN labels_done + %(delta)s > 0"
            "  THEN labels_done + %(delta)s ELSE 0 END,"
            " state = CASE WHEN labels_done + %(delta)s >= %(overlap)s THEN 'done' ELSE state END"
            " WHERE id = %(item)s",
            params,
        )
    for item_id in closed:
        cursor.execute(
            "UPDATE labelling_queueitem SET claims = CASE WHEN claims > 0 THEN claims - 1"
            " ELSE 0 END WHERE id = %s",
            [item_id],
        )
    if params["changed"]:
        cursor.execute(
            "UPDATE labelling_sample SET consensus_state = %(state)s,"
            " consensus_label_id = %(consensus)s WHERE id = %(sample)s",
            params,
        )
    cursor.execute(
        "INSERT INTO leanml_site_auditevent"
        " (created_at, actor_id, project_id, action, target_type, target_id, before, after)"
        " VALUES (%(now)s, %(user)s, %(project)s, %(action)s, %(target_type)s, %(target)s,"
        " %(before)s, %(after)s)",
        {**params, "target": str(annotation_id)},
    )
    return annotation_id


def annotation_last(*, project, user) -> Annotation | None:
    """The user's own latest annotation in the project: what "undo" goes back to."""
    return (
        Annotation.objects.filter(project=project, annotator=user, origin=Annotation.Origin.HUMAN)
        .select_related("sample", "label")
        .order_by("-id")
        .first()
    )

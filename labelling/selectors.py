"""Named reads of the labelling app, with their query optimisation."""

import re
from dataclasses import dataclass, field

from django.db.models import Count, Exists, F, Min, OuterRef, Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Substr

from .models import Annotation, Flag, Sample

# What a browser row shows; nothing else is read, so a page never loads the
# full text of fifty long reviews.
SAMPLE_ROW_FIELDS = (
    "id",
    "project_id",
    "external_id",
    "source",
    "split",
    "status",
    "revision",
    "consensus_state",
    "consensus_label_id",
)
EXCERPT_CHARS = 240
SEARCHABLE_KINDS = ("text", "category")
FLAG_ANY, FLAG_NONE = "any", "none"
LABEL_NONE = "none"
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _one_line(excerpt):
    """A preview on one line: literal <br /> tags (common in imported reviews)
    become spaces. Still plain text; templates escape it."""
    return _BR.sub(" ", excerpt) if isinstance(excerpt, str) else excerpt


def _text_of(project, name):
    return KeyTextTransform(name, "data") if name else Cast("data", TextField())


def sample_filter(queryset, *, project, filters):
    """Narrow ``queryset`` (samples of ``project``) by the browser's filters.

    ``filters`` keys, each optional (None or "" means no filter):
    label (a label class id, or "none" for no consensus label),
    consensus_state, flag ("any", "none" or a flag kind: open flags only),
    source, split, status, annotator (a user id: has any annotation by them),
    q (text search, or an exact external id).

    Every filter is an equality on the sample row or an EXISTS probe, so the
    ``(project, X, id)`` indexes serve "WHERE ... AND id > cursor ORDER BY
    id LIMIT n" without sorting, whatever the page.
    """
    filters = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
    if "label" in filters:
        if str(filters["label"]) == LABEL_NONE:
            queryset = queryset.filter(consensus_label__isnull=True)
        else:
            queryset = queryset.filter(consensus_label_id=int(filters["label"]))
    for key in ("consensus_state", "source", "split", "status"):
        if key in filters:
            queryset = queryset.filter(**{key: filters[key]})
    if "flag" in filters:
        open_flags = Flag.objects.filter(sample_id=OuterRef("pk"), resolved_at__isnull=True)
        if filters["flag"] == FLAG_NONE:
            queryset = queryset.filter(~Exists(open_flags))
        else:
            if filters["flag"] != FLAG_ANY:
                open_flags = open_flags.filter(kind=filters["flag"])
            queryset = queryset.filter(Exists(open_flags))
    if "annotator" in filters:
        queryset = queryset.filter(
            Exists(
                Annotation.objects.filter(
                    sample_id=OuterRef("pk"), annotator_id=int(filters["annotator"])
                )
            )
        )
    if "q" in filters:
        queryset = _search(queryset, project, str(filters["q"]).strip())
    return queryset


def _search(queryset, project, q):
    """Case-insensitive substring search over the project's text and category
    field values (or the whole data when no fields are configured), plus an
    exact external id.

    This is a sequential scan of the project's rows on both databases (a
    leading-wildcard LIKE cannot use a b-tree); fine for tens of thousands,
    slow at a million, where a pg_trgm GIN index on the text field would be
    the next step.
    """
    if not q:
        return queryset
    names = [f["name"] for f in project.fields if f.get("kind", "text") in SEARCHABLE_KINDS]
    # Key values, not the JSON text: searching the serialised JSON would match
    # key names ("text") on every row and miss non-ASCII text that SQLite
    # stores escaped.
    aliases = {f"_q{i}": KeyTextTransform(name, "data") for i, name in enumerate(names)}
    if not aliases:
        aliases = {"_q0": Cast("data", TextField())}
    condition = Q(external_id=q)
    for alias in aliases:
        condition |= Q(**{f"{alias}__icontains": q})
    return queryset.alias(**aliases).filter(condition)


@dataclass
class SamplePage:
    rows: list
    next_after: int | None = None  # pass as ``after`` for the next page
    prev_before: int | None = None  # pass as ``before`` for the previous page
    label_classes: dict = field(default_factory=dict)

    @property
    def has_next(self):
        return self.next_after is not None

    @property
    def has_previous(self):
        return self.prev_before is not None


def sample_browse(*, project, filters, after=None, before=None, limit=50) -> SamplePage:
    """One page of the samples browser, by keyset on id (never OFFSET).

    ``after``/``before`` are sample ids from a previous page's cursors. Rows
    carry ``excerpt`` (the first characters of the project's text field),
    ``label`` (the consensus LabelClass or None) and ``open_flags`` (kinds).
    """
    base = sample_filter(Sample.objects.filter(project=project), project=project, filters=filters)
    rows_qs = base.only(*SAMPLE_ROW_FIELDS).annotate(
        excerpt=Substr(_text_of(project, project.text_field), 1, EXCERPT_CHARS)
    )
    if before is not None:
        rows = list(rows_qs.filter(id__lt=int(before)).order_by("-id")[: limit + 1])
        if not rows:  # stepped back past the start: show the first page instead
            return sample_browse(project=project, filters=filters, limit=limit)
        more_before = len(rows) > limit
        rows = rows[:limit][::-1]
        more_after = base.filter(id__gte=int(before)).exists()
    else:
        if after is not None:
            rows_qs = rows_qs.filter(id__gt=int(after))
        rows = list(rows_qs.order_by("id")[: limit + 1])
        more_after = len(rows) > limit
        rows = rows[:limit]
        # One index probe: is anything matching at or before the cursor?
        more_before = after is not None and base.filter(id__lte=int(after)).exists()

    labels = {c.id: c for c in project.label_classes.all()}
    open_flags = {}
    for sample_id, kind in Flag.objects.filter(
        sample_id__in=[r.id for r in rows], resolved_at__isnull=True
    ).values_list("sample_id", "kind"):
        open_flags.setdefault(sample_id, []).append(kind)
    for row in rows:
        row.label = labels.get(row.consensus_label_id)
        row.open_flags = open_flags.get(row.id, [])
        row.excerpt = _one_line(row.excerpt)
    return SamplePage(
        rows=rows,
        next_after=(rows[-1].id if rows else None) if more_after else None,
        prev_before=(rows[0].id if rows else int(after) + 1) if more_before else None,
        label_classes=labels,
    )


@dataclass
class DuplicateGroup:
    content_hash: str
    count: int
    samples: list


def duplicate_groups(*, project, limit=50, samples_per_group=20) -> list[DuplicateGroup]:
    """Groups of active samples with the same content hash (exact duplicates),
    largest first; each group lists up to ``samples_per_group`` samples."""
    heads = list(
        Sample.objects.filter(project=project, status=Sample.Status.ACTIVE)
        .values("content_hash")
        .annotate(n=Count("id"), first=Min("id"))
        .filter(n__gt=1)
        .order_by("-n", "first")[:limit]
    )
    members = {}
    rows = (
        Sample.objects.filter(
            project=project,
            status=Sample.Status.ACTIVE,
            content_hash__in=[h["content_hash"] for h in heads],
        )
        .only(*SAMPLE_ROW_FIELDS, "content_hash", "created_at")
        .annotate(excerpt=Substr(_text_of(project, project.text_field), 1, EXCERPT_CHARS))
        .order_by("id")
    )
    labels = {c.id: c for c in project.label_classes.all()}
    for row in rows:
        row.label = labels.get(row.consensus_label_id)
        row.excerpt = _one_line(row.excerpt)
        group = members.setdefault(row.content_hash, [])
        if len(group) < samples_per_group:
            group.append(row)
    return [
        DuplicateGroup(h["content_hash"], h["n"], members.get(h["content_hash"], [])) for h in heads
    ]


def _field_order(sample, data):
    """Data keys in the project's field order, then any others (PostgreSQL's
    jsonb does not keep the imported key order)."""
    configured = [f["name"] for f in sample.project.fields if f["name"] in data]
    return configured + sorted(k for k in data if k not in set(configured))


def sample_history(*, sample):
    """Everything the sample page shows about one sample's past, in order.

    Returns a dict of: revisions (with ``changed``, the sorted field names that
    differ from the previous one, and ``rows``: (name, value, changed) pairs), annotations (with ``is_current`` on each annotator's latest row),
    adjudications, flags and queue items.
    """
    revisions = list(sample.revisions.select_related("author").order_by("number"))
    previous = None
    for revision in revisions:
        changed = (
            []
            if previous is None
            else sorted(
                k
                for k in set(revision.data) | set(previous.data)
                if revision.data.get(k) != previous.data.get(k)
            )
        )
        revision.changed = changed
        # Pairs, not the dict: a template reading data.items would look up a
        # data field named "items" first.
        revision.rows = [
            (k, revision.data[k], k in changed) for k in _field_order(sample, revision.data)
        ]
        previous = revision
    annotations = list(sample.annotations.select_related("annotator", "label").order_by("id").all())
    latest = {}
    for annotation in annotations:
        latest[annotation.annotator_id] = annotation.id
    for annotation in annotations:
        annotation.is_current = latest[annotation.annotator_id] == annotation.id
    return {
        "revisions": revisions,
        "annotations": annotations,
        "adjudications": list(
            sample.adjudications.select_related("by", "label").order_by("id").all()
        ),
        "flags": list(
            sample.flags.select_related("created_by", "resolved_by", "duplicate_of").order_by(
                F("resolved_at").desc(nulls_first=True), "-id"
            )
        ),
        "queue_items": list(sample.queue_items.order_by("-id")),
    }

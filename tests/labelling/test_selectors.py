import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labelling.models import Annotation, Sample
from labelling.selectors import duplicate_groups, sample_browse, sample_history
from labelling.services.cleaning import sample_flag, sample_revise
from tests.factories import ProjectFactory, SampleFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(db):
    return ProjectFactory(
        fields=[
            {"name": "review", "kind": "text", "shown": True},
            {"name": "product", "kind": "category", "shown": True},
            {"name": "stars", "kind": "number", "shown": True},
        ]
    )


def add(project, n, **fields):
    start = Sample.objects.count()
    return Sample.objects.bulk_create(
        Sample(
            project=project,
            external_id=f"e{start + i}",
            data={"review": f"review {start + i}", "product": "tea", "stars": 1},
            content_hash=f"hash{start + i}",
            split="train",
            **fields,
        )
        for i in range(n)
    )


def ids(page):
    return [row.id for row in page.rows]


def test_keyset_walks_every_sample_once_forward_and_back(project):
    every = [s.id for s in sorted(add(project, 23), key=lambda s: s.id)]
    pages, page = [], sample_browse(project=project, filters={}, limit=10)
    while True:
        pages.append(ids(page))
        if not page.has_next:
            break
        page = sample_browse(project=project, filters={}, after=page.next_after, limit=10)
    assert pages == [every[:10], every[10:20], every[20:]]
    assert not sample_browse(project=project, filters={}, limit=10).has_previous

    back = sample_browse(project=project, filters={}, before=page.prev_before, limit=10)
    assert ids(back) == every[10:20]
    assert back.has_previous and back.has_next
    back = sample_browse(project=project, filters={}, before=back.prev_before, limit=10)
    assert ids(back) == every[:10] and not back.has_previous


def test_a_cursor_past_either_end_is_harmless(project):
    every = sorted(s.id for s in add(project, 5))
    beyond = sample_browse(project=project, filters={}, after=every[-1] + 100)
    assert beyond.rows == [] and not beyond.has_next and beyond.has_previous
    assert ids(sample_browse(project=project, filters={}, before=beyond.prev_before)) == every
    before_start = sample_browse(project=project, filters={}, before=every[0])
    assert ids(before_start) == every  # falls back to the first page


def test_rows_carry_excerpt_label_and_open_flags_without_extra_queries(project):
    label = project.label_classes.create(name="great", colour="#2b8a3e")
    user = UserFactory()
    samples = add(project, 30, consensus_state="agreed", consensus_label=label)
    sample_flag(sample=samples[0], by=user, kind="corrupt")
    sample_flag(sample=samples[0], by=user, kind="ambiguous")

    with CaptureQueriesContext(connection) as queries:
        page = sample_browse(project=project, filters={}, limit=25)
    # rows, label classes, open flags: the same few queries whatever the page size
    assert len(queries) == 3
    first = page.rows[0]
    assert first.excerpt == "review 0" and first.label == label
    assert sorted(first.open_flags) == ["ambiguous", "corrupt"]
    assert page.rows[1].open_flags == []
    # only the shown columns are read: the full data stays in the database
    assert "data" in first.get_deferred_fields()


def test_excerpt_is_cut_to_a_preview(project):
    SampleFactory(project=project, data={"review": "word " * 200})
    (row,) = sample_browse(project=project, filters={}).rows
    assert len(row.excerpt) == 240


def test_search_reads_field_values_not_json_keys_and_handles_non_ascii(project):
    SampleFactory(project=project, external_id="a", data={"review": "Un café très bon"})
    SampleFactory(project=project, external_id="b", data={"review": "plain", "product": "Mocha"})
    SampleFactory(project=project, external_id="c", data={"review": "x", "stars": 5})

    def found(q):
        return [r.external_id for r in sample_browse(project=project, filters={"q": q}).rows]

    assert found("café") == ["a"]
    assert found("mocha") == ["b"]  # category fields are searched too
    assert found("review") == []  # a key name is not content
    assert found("c") == ["a", "b", "c"]  # café, Mocha, and the exact external id c
    assert found("5") == []  # number fields are not text-searched


def test_search_without_configured_fields_reads_the_whole_data(db):
    project = ProjectFactory(fields=[])
    SampleFactory(project=project, external_id="a", data={"anything": "needle here"})
    SampleFactory(project=project, external_id="b", data={"anything": "hay"})
    rows = sample_browse(project=project, filters={"q": "needle"}).rows
    assert [r.external_id for r in rows] == ["a"]


def test_filters_combine(project):
    label = project.label_classes.create(name="great")
    user = UserFactory()
    a, b, c = add(project, 3, consensus_state="agreed", consensus_label=label)
    Annotation.objects.create(project=project, sample=a, annotator=user, label=label)
    Annotation.objects.create(project=project, sample=b, annotator=user, label=label)
    sample_flag(sample=b, by=user, kind="corrupt")

    page = sample_browse(
        project=project, filters={"label": label.pk, "annotator": user.pk, "flag": "none"}
    )
    assert ids(page) == [a.id]
    page = sample_browse(project=project, filters={"label": str(label.pk), "flag": "corrupt"})
    assert ids(page) == [b.id]
    assert ids(sample_browse(project=project, filters={"label": "", "q": None})) == [
        a.id,
        b.id,
        c.id,
    ]


def test_filters_never_leak_another_projects_samples(project):
    other = ProjectFactory()
    SampleFactory(project=other, data={"review": "same words"})
    SampleFactory(project=project, data={"review": "same words"})
    assert len(sample_browse(project=project, filters={"q": "same"}).rows) == 1


def test_duplicate_groups_are_active_samples_sharing_a_hash(project):
    user = UserFactory()
    big = [SampleFactory(project=project, data={"review": "dup"}) for _ in range(3)]
    pair = [SampleFactory(project=project, data={"review": "pair"}) for _ in range(2)]
    SampleFactory(project=project, data={"review": "alone"})
    gone = [SampleFactory(project=project, data={"review": "gone"}) for _ in range(2)]
    sample_flag(sample=gone[1], by=user, kind="duplicate", duplicate_of=gone[0])
    SampleFactory(data={"review": "dup"})  # another project

    groups = duplicate_groups(project=project)

    assert [(g.count, [s.id for s in g.samples]) for g in groups] == [
        (3, [s.id for s in big]),
        (2, [s.id for s in pair]),
    ]
    assert groups[0].samples[0].excerpt == "dup"
    assert len(duplicate_groups(project=project, limit=1)) == 1
    assert [len(g.samples) for g in duplicate_groups(project=project, samples_per_group=2)] == [
        2,
        2,
    ]


def test_history_marks_each_annotators_latest_label_and_changed_fields(project):
    expert, other = UserFactory(), UserFactory()
    great, bad = (
        project.label_classes.create(name="great"),
        project.label_classes.create(name="bad"),
    )
    sample = SampleFactory(project=project, data={"review": "old", "stars": 1})
    first = Annotation.objects.create(project=project, sample=sample, annotator=expert, label=bad)
    second = Annotation.objects.create(
        project=project, sample=sample, annotator=expert, label=great
    )
    theirs = Annotation.objects.create(project=project, sample=sample, annotator=other, kind="skip")
    sample_revise(sample=sample, by=expert, changes={"review": "new"})

    history = sample_history(sample=sample)

    assert [(a.id, a.is_current) for a in history["annotations"]] == [
        (first.id, False),
        (second.id, True),
        (theirs.id, True),
    ]
    assert [(r.number, r.changed) for r in history["revisions"]] == [(1, []), (2, ["review"])]
    assert history["revisions"][1].rows == [("review", "new", True), ("stars", 1, False)]


def test_excerpt_is_one_line_of_plain_text(project):
    SampleFactory(project=project, data={"review": "Good.<br /><br/>Would buy <BR>again"})
    (row,) = sample_browse(project=project, filters={}).rows
    assert row.excerpt == "Good.  Would buy  again"

import threading

import pytest
from django.db import connection

from labelling.limits import MAX_NOTE_CHARS, MAX_VALUE_CHARS
from labelling.models import Annotation, Flag, Sample, SampleRevision
from labelling.services.cleaning import (
    CleaningError,
    duplicates_merge,
    flag_resolve,
    sample_flag,
    sample_revise,
)
from leanml_site.models import AuditEvent
from ml.hashing import content_hash
from tests.factories import ProjectFactory, SampleFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(db):
    return ProjectFactory(
        fields=[
            {"name": "text", "kind": "text", "shown": True},
            {"name": "stars", "kind": "number", "shown": True},
            {"name": "product", "kind": "category", "shown": True},
        ]
    )


@pytest.fixture
def expert(db):
    return UserFactory(username="cleaner")


def make_sample(project, **data):
    data = {"text": "Good tea<br />really", "stars": 4, "product": "tea", **data}
    return SampleFactory(project=project, data=data)


# --- sample_revise ------------------------------------------------------------------


def test_first_correction_keeps_the_imported_original_as_revision_1(project, expert):
    sample = make_sample(project)
    original, original_hash = dict(sample.data), sample.content_hash

    revision = sample_revise(sample=sample, by=expert, changes={"text": "Good tea"}, note="typo")

    revisions = list(SampleRevision.objects.filter(sample=sample).order_by("number"))
    assert [(r.number, r.author, r.note) for r in revisions] == [
        (1, None, "as imported"),
        (2, expert, "typo"),
    ]
    assert revisions[0].data == original and revisions[0].content_hash == original_hash
    assert revision == revisions[1]
    sample.refresh_from_db()
    assert sample.revision == 2
    assert sample.data == {**original, "text": "Good tea"}
    assert sample.content_hash == content_hash(sample.data) != original_hash


def test_later_corrections_append_and_never_overwrite(project, expert):
    sample = make_sample(project)
    sample_revise(sample=sample, by=expert, changes={"text": "one"})
    sample_revise(sample=sample, by=expert, changes={"text": "two", "stars": "5"})

    rows = list(SampleRevision.objects.filter(sample=sample).values_list("number", "data"))
    assert [number for number, _ in rows] == [1, 2, 3]
    assert rows[0][1]["text"] == "Good tea<br />really"
    assert rows[1][1]["text"] == "one"
    assert rows[2][1] == {"text": "two", "stars": 5, "product": "tea"}
    sample.refresh_from_db()
    assert sample.revision == 3 and sample.data["stars"] == 5


def test_revise_audits_only_the_changed_fields(project, expert):
    sample = make_sample(project)
    sample_revise(sample=sample, by=expert, changes={"text": "new", "stars": 4}, note="n")
    event = AuditEvent.objects.get(action="sample.revise")
    assert event.before == {"text": "Good tea<br />really"}
    assert event.after == {"text": "new", "revision": 2, "note": "n"}
    assert event.actor == expert and event.target_id == str(sample.pk)


def test_annotations_keep_the_revision_they_labelled(project, expert):
    sample = make_sample(project)
    label = project.label_classes.create(name="great")
    old = Annotation.objects.create(
        project=project, sample=sample, annotator=expert, label=label, revision=0
    )
    sample_revise(sample=sample, by=expert, changes={"text": "fixed"})
    old.refresh_from_db()
    assert old.revision == 0


def test_it_rejects_an_unknown_field_naming_it(project, expert):
    sample = make_sample(project)
    with pytest.raises(CleaningError, match="Unknown field 'titel'.*'x'") as info:
        sample_revise(sample=sample, by=expert, changes={"titel": "x"})
    assert info.value.field == "titel"
    assert not SampleRevision.objects.exists()


def test_it_rejects_a_value_of_the_wrong_kind(project, expert):
    sample = make_sample(project)
    with pytest.raises(CleaningError, match="'stars' is a number; 'abc' is not a number"):
        sample_revise(sample=sample, by=expert, changes={"text": "fine", "stars": "abc"})
    with pytest.raises(CleaningError, match="'text' is text"):
        sample_revise(sample=sample, by=expert, changes={"text": 12})
    sample.refresh_from_db()
    assert sample.revision == 0 and sample.data["text"] == "Good tea<br />really"
    assert not SampleRevision.objects.exists()


@pytest.mark.parametrize("value", ["", "   \n ", None])
def test_it_refuses_an_empty_text_field_as_an_import_does(project, expert, value):
    sample = make_sample(project)

    with pytest.raises(CleaningError, match="'text' is the project's text field") as refused:
        sample_revise(sample=sample, by=expert, changes={"text": value})

    assert refused.value.field == "text"
    assert not SampleRevision.objects.exists()
    sample.refresh_from_db()
    assert sample.data["text"] == "Good tea<br />really" and sample.revision == 0


def test_it_refuses_a_value_longer_than_an_import_takes(project, expert):
    sample = make_sample(project)
    longest = "x" * MAX_VALUE_CHARS

    with pytest.raises(CleaningError, match=f"at most {MAX_VALUE_CHARS:,}") as refused:
        sample_revise(sample=sample, by=expert, changes={"product": longest + "y"})

    assert refused.value.field == "product"
    assert not SampleRevision.objects.exists()
    assert sample_revise(sample=sample, by=expert, changes={"text": longest}).number == 2


def test_it_refuses_a_note_longer_than_the_limit_instead_of_cutting_it(project, expert):
    sample = make_sample(project)

    with pytest.raises(CleaningError, match="2,001 characters long") as refused:
        sample_revise(
            sample=sample, by=expert, changes={"text": "Good tea"}, note="n" * (MAX_NOTE_CHARS + 1)
        )

    assert refused.value.field == "note"
    assert not SampleRevision.objects.exists()
    note = "n" * MAX_NOTE_CHARS
    assert sample_revise(sample=sample, by=expert, changes={"text": "ok"}, note=note).note == note


def test_it_refuses_a_correction_that_changes_nothing(project, expert):
    sample = make_sample(project)
    with pytest.raises(CleaningError, match="Nothing changed"):
        sample_revise(sample=sample, by=expert, changes={"stars": "4"})
    with pytest.raises(CleaningError, match="at least one field"):
        sample_revise(sample=sample, by=expert, changes={})
    assert not SampleRevision.objects.exists()
    assert not AuditEvent.objects.filter(action="sample.revise").exists()


def test_it_accepts_a_field_configured_but_missing_from_the_data(project, expert):
    sample = SampleFactory(project=project, data={"text": "only text"})
    sample_revise(sample=sample, by=expert, changes={"product": "coffee"})
    sample.refresh_from_db()
    assert sample.data == {"text": "only text", "product": "coffee"}


def test_it_revises_from_the_locked_row_not_a_stale_copy(project, expert):
    sample = make_sample(project)
    stale = Sample.objects.get(pk=sample.pk)
    sample_revise(sample=sample, by=expert, changes={"text": "first"})
    sample_revise(sample=stale, by=expert, changes={"stars": 1})
    sample.refresh_from_db()
    assert sample.revision == 3
    assert sample.data["text"] == "first" and sample.data["stars"] == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_corrections_make_two_revisions_not_a_lost_update(project, expert):
    sample = make_sample(project)
    barrier = threading.Barrier(2)
    errors = []

    def revise(changes):
        try:
            barrier.wait(timeout=10)
            sample_revise(sample=Sample.objects.get(pk=sample.pk), by=expert, changes=changes)
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=revise, args=({"text": "from A"},)),
        threading.Thread(target=revise, args=({"stars": 1},)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    sample.refresh_from_db()
    numbers = list(
        SampleRevision.objects.filter(sample=sample)
        .order_by("number")
        .values_list("number", flat=True)
    )
    assert numbers == [1, 2, 3]
    assert sample.revision == 3
    assert sample.data == {"text": "from A", "stars": 1, "product": "tea"}


# --- flags --------------------------------------------------------------------------


def test_a_flag_excludes_the_sample_and_resolving_restores_it(project, expert):
    sample = make_sample(project)
    flag = sample_flag(sample=sample, by=expert, kind="corrupt", note="garbled")

    sample.refresh_from_db()
    assert sample.status == Sample.Status.EXCLUDED
    assert (flag.kind, flag.note, flag.created_by, flag.resolved_at) == (
        "corrupt",
        "garbled",
        expert,
        None,
    )
    event = AuditEvent.objects.get(action="sample.flag")
    assert event.after["kind"] == "corrupt" and event.before == {"status": "active"}

    flag_resolve(flag=flag, by=expert, resolution="re-imported the file")
    flag.refresh_from_db()
    sample.refresh_from_db()
    assert flag.resolved_by == expert and flag.resolved_at is not None
    assert flag.resolution == "re-imported the file"
    assert sample.status == Sample.Status.ACTIVE
    assert AuditEvent.objects.filter(action="flag.resolve", target_id=str(flag.pk)).exists()


def test_sample_stays_excluded_while_another_flag_is_open(project, expert):
    sample = make_sample(project)
    first = sample_flag(sample=sample, by=expert, kind="corrupt")
    second = sample_flag(sample=sample, by=expert, kind="ambiguous")
    flag_resolve(flag=first, by=expert, resolution="fixed")
    sample.refresh_from_db()
    assert sample.status == Sample.Status.EXCLUDED
    flag_resolve(flag=second, by=expert, resolution="guideline updated")
    sample.refresh_from_db()
    assert sample.status == Sample.Status.ACTIVE


def test_resolving_needs_a_resolution_and_happens_once(project, expert):
    sample = make_sample(project)
    flag = sample_flag(sample=sample, by=expert, kind="out_of_scope")
    with pytest.raises(CleaningError, match="Say how"):
        flag_resolve(flag=flag, by=expert, resolution="   ")
    flag.refresh_from_db()
    assert flag.resolved_at is None
    flag_resolve(flag=flag, by=expert, resolution="in scope after all")
    with pytest.raises(CleaningError, match="already resolved"):
        flag_resolve(flag=flag, by=expert, resolution="again")


def test_a_flag_note_or_resolution_longer_than_the_limit_is_refused_not_cut(project, expert):
    sample = make_sample(project)
    longest = "n" * MAX_NOTE_CHARS

    with pytest.raises(CleaningError, match="The note is 2,001 characters long") as refused:
        sample_flag(sample=sample, by=expert, kind="corrupt", note=longest + "n")
    assert refused.value.field == "note"
    assert not Flag.objects.exists()
    sample.refresh_from_db()
    assert sample.status == Sample.Status.ACTIVE

    flag = sample_flag(sample=sample, by=expert, kind="corrupt", note=longest)
    assert flag.note == longest
    with pytest.raises(CleaningError, match="The resolution is 2,001 characters long") as refused:
        flag_resolve(flag=flag, by=expert, resolution=longest + "r")
    assert refused.value.field == "resolution"
    flag.refresh_from_db()
    assert flag.resolved_at is None
    assert flag_resolve(flag=flag, by=expert, resolution=longest).resolution == longest


def test_it_rejects_an_unknown_kind(project, expert):
    sample = make_sample(project)
    with pytest.raises(CleaningError, match="Unknown flag kind 'spam'"):
        sample_flag(sample=sample, by=expert, kind="spam")
    assert not Flag.objects.exists()


def test_a_duplicate_flag_needs_another_sample_of_the_same_project(project, expert):
    sample, other = make_sample(project), make_sample(project)
    elsewhere = SampleFactory(data={"text": "elsewhere"})

    with pytest.raises(CleaningError, match="needs the sample it duplicates"):
        sample_flag(sample=sample, by=expert, kind="duplicate")
    with pytest.raises(CleaningError, match="duplicate of itself"):
        sample_flag(sample=sample, by=expert, kind="duplicate", duplicate_of=sample)
    with pytest.raises(CleaningError, match="not in this project"):
        sample_flag(sample=sample, by=expert, kind="duplicate", duplicate_of=elsewhere)
    with pytest.raises(CleaningError, match="Only a duplicate flag"):
        sample_flag(sample=sample, by=expert, kind="corrupt", duplicate_of=other)
    assert not Flag.objects.exists()
    sample.refresh_from_db()
    assert sample.status == Sample.Status.ACTIVE

    flag = sample_flag(sample=sample, by=expert, kind="duplicate", duplicate_of=other)
    assert flag.duplicate_of == other


def test_two_samples_cannot_be_duplicates_of_each_other(project, expert):
    a, b = make_sample(project), make_sample(project)
    sample_flag(sample=a, by=expert, kind="duplicate", duplicate_of=b)
    with pytest.raises(CleaningError, match="already flagged as a duplicate"):
        sample_flag(sample=b, by=expert, kind="duplicate", duplicate_of=a)
    b.refresh_from_db()
    assert b.status == Sample.Status.ACTIVE


def test_it_refuses_a_second_open_flag_of_the_same_kind(project, expert):
    sample = make_sample(project)
    first = sample_flag(sample=sample, by=expert, kind="corrupt")
    with pytest.raises(
        CleaningError, match=f"already has an open 'Corrupt' flag \\(#{first.pk}\\)"
    ):
        sample_flag(sample=sample, by=expert, kind="corrupt")
    assert Flag.objects.count() == 1


# --- duplicates_merge ---------------------------------------------------------------


def test_merge_flags_each_duplicate_and_skips_those_already_flagged(project, expert):
    keep = make_sample(project, text="same")
    a, b, c = (make_sample(project, text="same") for _ in range(3))
    earlier = sample_flag(sample=a, by=expert, kind="duplicate", duplicate_of=keep)

    flags = duplicates_merge(project=project, by=expert, keep=keep, duplicates=[a, b, c, keep])

    assert sorted(f.sample_id for f in flags) == sorted([b.pk, c.pk])
    assert all(f.duplicate_of_id == keep.pk and f.kind == "duplicate" for f in flags)
    assert Flag.objects.filter(sample=a).get() == earlier
    assert set(Sample.objects.filter(status="excluded").values_list("pk", flat=True)) == {
        a.pk,
        b.pk,
        c.pk,
    }
    keep.refresh_from_db()
    assert keep.status == Sample.Status.ACTIVE
    event = AuditEvent.objects.get(action="duplicates.merge")
    assert event.after["skipped"] == [a.external_id]
    assert sorted(event.after["flagged"]) == sorted([b.external_id, c.external_id])


def test_merge_refuses_samples_of_another_project(project, expert):
    keep = make_sample(project)
    elsewhere = SampleFactory(data={"text": "x"})
    with pytest.raises(CleaningError, match="not in this project"):
        duplicates_merge(project=project, by=expert, keep=keep, duplicates=[elsewhere])
    with pytest.raises(CleaningError, match="at least one duplicate"):
        duplicates_merge(project=project, by=expert, keep=keep, duplicates=[keep])
    assert not Flag.objects.exists()

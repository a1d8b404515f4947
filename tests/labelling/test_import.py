"""The import service: formats, all-or-nothing errors that say where, policies, jobs."""

import json
from unittest import mock

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection

from labelling.limits import MAX_VALUE_CHARS
from labelling.models import (
    Annotation,
    ImportJob,
    Project,
    QueueItem,
    Sample,
    SampleRevision,
)
from labelling.services import importing
from labelling.services.importing import (
    import_job_create,
    import_job_progress,
    import_job_run,
    import_path,
    jobs,
    preparing,
    reading,
)
from leanml_site.models import AuditEvent
from ml.hashing import canonical_json, content_hash, split_for
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


def upload(name, content):
    if isinstance(content, str):
        content = content.encode("utf-8")
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def run(team, name, content, *, user="data_scientist", project=None, **options):
    return import_job_create(
        project=project or team.project,
        by=team.users[user],
        uploaded_file=upload(name, content),
        **options,
    )


def state(project):
    return (
        Sample.objects.filter(project=project).count(),
        Annotation.objects.filter(project=project).count(),
        QueueItem.objects.filter(project=project).count(),
        SampleRevision.objects.filter(sample__project=project).count(),
    )


def samples(project):
    return {s.external_id: s for s in Sample.objects.filter(project=project)}


# --- Formats ------------------------------------------------------------------------


def test_csv_import_creates_samples_queue_items_and_labels(team):
    great = team.classes[0]
    job = run(
        team,
        "reviews.csv",
        'id,text,label\n007,Lovely tea,great\n8,Stale <b>chips</b>,\n9,"Fine, ok",other\n',
        label_column="label",
    )

    assert job.state == ImportJob.State.SUCCEEDED, job.error
    assert job.counts["created"] == 3
    assert job.counts["labels"] == 2
    assert job.counts["queued"] == 1
    by_id = samples(team.project)
    assert set(by_id) == {"007", "8", "9"}  # the leading zero survives
    sample = by_id["007"]
    assert sample.data == {"text": "Lovely tea"}
    assert sample.content_hash == content_hash({"text": "Lovely tea"})
    assert sample.split == split_for("007", team.project.holdout_fraction)
    assert sample.source == Sample.Source.IMPORT
    assert (sample.consensus_state, sample.consensus_label_id) == ("agreed", great.pk)
    annotation = Annotation.objects.get(sample=sample)
    assert annotation.origin == Annotation.Origin.IMPORT
    assert annotation.annotator == team.users["data_scientist"]
    assert annotation.label == great
    item = QueueItem.objects.get(project=team.project)
    assert item.sample == by_id["8"]
    assert (item.priority, item.strategy, item.reason, item.state) == (
        0,
        "imported",
        "Imported",
        "open",
    )
    assert by_id["8"].consensus_state == "none"
    assert AuditEvent.objects.filter(action="import.succeeded", target_id=str(job.pk)).exists()


def test_json_list_keeps_numbers_for_number_fields(team):
    project = team.project
    project.fields = [
        {"name": "text", "kind": "text", "shown": True},
        {"name": "stars", "kind": "number", "shown": True},
        {"name": "shop", "kind": "category", "shown": True},
    ]
    project.save()
    rows = [
        {"id": 1, "text": "a", "stars": 5, "shop": "north"},
        {"id": 2, "text": "b", "stars": 4.5, "shop": None},
        {"id": "3", "text": "c", "stars": "2", "extra": {"k": [1, 2]}},
    ]
    job = run(team, "rows.json", json.dumps(rows))

    assert job.state == "succeeded", job.error
    by_id = samples(project)
    assert by_id["1"].data == {"text": "a", "stars": 5, "shop": "north"}
    assert isinstance(by_id["1"].data["stars"], int)
    assert by_id["2"].data == {"text": "b", "stars": 4.5}  # null -> missing
    assert by_id["3"].data == {"text": "c", "stars": 2, "extra": {"k": [1, 2]}}


def test_jsonl_import(team):
    lines = "\n".join(
        json.dumps(r) for r in [{"id": "a", "text": "x"}, {"id": "b", "text": "y", "n": 1}]
    )
    job = run(team, "rows.jsonl", lines + "\n")

    assert job.state == "succeeded", job.error
    assert samples(team.project)["b"].data == {"text": "y", "n": 1}
    assert job.format == "jsonl"


def label_studio_tasks():
    def choice(label):
        return [{"type": "choices", "from_name": "label", "to_name": "text",
                 "value": {"choices": [label]}}]  # fmt: skip

    return [
        # annotations win over predictions
        {
            "id": 11,
            "data": {"text": "one"},
            "annotations": [{"result": choice("great")}],
            "predictions": [{"result": choice("other"), "score": 0.9}],
        },  # fmt: skip
        # only a prediction: the best-scored one
        {
            "id": 12,
            "data": {"text": "two"},
            "annotations": [],
            "predictions": [
                {"result": choice("great"), "score": 0.2},
                {"result": choice("other"), "score": 0.7},
            ],
        },  # fmt: skip
        # a ground-truth annotation beats the majority; cancelled ones do not count
        {
            "id": 13,
            "data": {"text": "three"},
            "annotations": [
                {"result": choice("other")},
                {"result": choice("other")},
                {"result": choice("great"), "ground_truth": True},
                {"result": choice("other"), "was_cancelled": True},
            ],
        },  # fmt: skip
        # no label at all
        {"id": 14, "data": {"text": "four"}},
        # a majority wins; a tie is no label (and no fallback to predictions)
        {"id": 15, "data": {"text": "five"}, "annotations": [
            {"result": choice("great")}, {"result": choice("other")}, {"result": choice("other")}]},
        {"id": 16, "data": {"text": "six"}, "annotations": [
            {"result": choice("great")}, {"result": choice("other")}],
         "predictions": [{"result": choice("great")}]},
    ]  # fmt: skip


def test_label_studio_export_uses_annotations_then_predictions(team):
    job = run(team, "project-1-at-2024.json", json.dumps(label_studio_tasks()))

    assert job.state == "succeeded", job.error
    assert job.format == "label_studio"  # detected from the tasks' "data" objects
    by_id = samples(team.project)
    assert set(by_id) == {"11", "12", "13", "14", "15", "16"}  # no id in data: the task id
    labels = {
        s.external_id: s.consensus_label.name if s.consensus_label else None for s in by_id.values()
    }
    assert labels == {
        "11": "great",
        "12": "other",
        "13": "great",
        "14": None,
        "15": "other",
        "16": None,
    }
    assert by_id["11"].data == {"text": "one"}
    queued = QueueItem.objects.filter(project=team.project).values_list("sample__external_id")
    assert sorted(queued) == [("14",), ("16",)]


def test_label_studio_takes_the_id_from_data_when_present(team):
    tasks = [
        {"id": 1, "data": {"ref": "A-1", "text": "x"}},
        {"id": 2, "data": {"ref": "A-2", "text": "y"}},
    ]
    job = run(team, "ls.json", json.dumps(tasks), fmt="label_studio", id_column="ref")

    assert job.state == "succeeded", job.error
    assert samples(team.project)["A-1"].data == {"text": "x"}


def test_first_import_sets_the_project_fields_from_the_columns(team):
    project = team.project
    project.fields = []
    project.save()
    job = run(team, "f.csv", "id,title,price,code\n1,Tea,3.5,007\n2,Cake,4,010\n")

    assert job.state == "succeeded", job.error
    project.refresh_from_db()
    assert project.fields == [
        {"name": "title", "kind": "text", "shown": True},
        {"name": "price", "kind": "number", "shown": True},
        {"name": "code", "kind": "text", "shown": True},  # "007" is a code, not 7
    ]
    assert samples(project)["2"].data == {"title": "Cake", "price": 4, "code": "010"}


@pytest.mark.parametrize(
    "data",
    [
        {"b": "é <br />", "a": 1.5, "c": [1, {"z": None}]},
        {"text": 'quote " backslash \\ tab \t 😀', "n": 10**20, "f": 0.1},
        {"ü": "\x7f\x01\u2028", "B": True, "a": None, "e": float("inf"), "k": '\\"'},
        {},
    ],
)
def test_the_stored_text_and_hash_match_ml_hashing(data):
    text = preparing.fast_canonical_json(data)
    assert text == canonical_json(data)
    assert preparing.hash_text(text) == content_hash(data)


def test_each_rows_hash_is_ml_hashing_of_the_data_stored(team):
    # Rows are serialised member by member while they are checked; the hash
    # must still be content_hash() of what the database gives back.
    lines = [
        {"id": "a", "text": 'quote " and \\ back\tslash 😀', "zeta": {"n": [1, None]}, "B": 2.5},
        {"id": "b", "text": "\u2028 \x7f \x01 é", "zeta": 10**15},
        {"id": "c", "text": "no other keys"},
    ]
    job = run(team, "rows.jsonl", "\n".join(json.dumps(line) for line in lines))

    assert job.state == ImportJob.State.SUCCEEDED, job.error
    stored = samples(team.project)
    assert stored["a"].data == {
        "text": 'quote " and \\ back\tslash 😀',
        "zeta": {"n": [1, None]},
        "B": 2.5,
    }
    for sample in stored.values():
        assert sample.content_hash == content_hash(sample.data), sample.external_id


def test_new_samples_never_take_a_deleted_samples_id(team):
    # SQLite's path numbers the ids itself; a deleted sample's id stays unused
    # (audit events still name it), as AUTOINCREMENT and sequences keep it.
    assert run(team, "a.csv", "id,text\n1,x\n2,y\n").state == "succeeded"
    last = Sample.objects.filter(project=team.project).order_by("-id").first()
    deleted_id = last.pk
    last.delete()

    job = run(team, "b.csv", "id,text,label\n3,z,\n4,w,great\n", label_column="label")

    assert job.state == "succeeded", job.error
    new = Sample.objects.filter(project=team.project, external_id__in=["3", "4"]).order_by("id")
    assert [s.external_id for s in new] == ["3", "4"]  # the file's order
    assert new[0].pk > deleted_id
    assert QueueItem.objects.get(sample=new[0]).state == QueueItem.State.OPEN
    assert Annotation.objects.get(sample=new[1]).label == team.classes[0]
    assert not QueueItem.objects.filter(sample=new[1]).exists()


def test_a_large_import_refreshes_the_planners_statistics_on_postgresql(team, monkeypatch):
    monkeypatch.setattr(jobs, "ANALYZE_AFTER_ROWS", 3)
    calls = []
    original = jobs.analyze_tables
    monkeypatch.setattr(jobs, "analyze_tables", lambda **kw: (calls.append(kw), original(**kw))[1])

    assert run(team, "small.csv", "id,text\n1,x\n2,y\n").state == "succeeded"
    assert calls == []  # under the threshold
    job = run(team, "large.csv", "id,text,label\n3,x,\n4,y,\n5,z,great\n", label_column="label")

    assert job.state == "succeeded", job.error
    if connection.vendor != "postgresql":
        assert calls == []
        return
    assert calls == [{"labels": True}]
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'labelling_sample'")
        assert cursor.fetchone()[0] >= 5  # the planner now knows the samples are there


@pytest.mark.parametrize("vendor_path", ["write_new_postgres", "write_new_portable"])
def test_each_database_takes_its_own_write_path(team, monkeypatch, vendor_path):
    expected = "write_new_postgres" if connection.vendor == "postgresql" else "write_new_portable"
    calls = []
    original = getattr(jobs, vendor_path)

    def spy(*args, **kwargs):
        calls.append(vendor_path)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, vendor_path, spy)
    job = run(team, "a.csv", "id,text,label\n1,x,great\n2,y,\n", label_column="label")

    assert job.state == "succeeded", job.error
    assert calls == ([vendor_path] if vendor_path == expected else [])
    assert state(team.project) == (2, 1, 1, 0)


# --- Bad input: a clear location, and nothing written ------------------------------


# The start of a real PNG image: what the QA walk-through imported as "notcsv.csv".
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000300000003008060000005702f987")

BAD_INPUTS = [
    pytest.param(
        "a.csv", "ref,text\n1,x\n", {}, None, "id", None,
        "there is no id column “id”", id="missing-id-column",
    ),
    pytest.param(
        "a.csv", "id,text,label\n1,x,great\n2,y,grate\n", {"label_column": "label"},
        2, "label", "grate", "unknown label “grate”", id="unknown-label",
    ),
    pytest.param(
        "a.csv", "id,text\n1,x\n,y\n", {}, 2, "id", "", "the id is empty", id="empty-id",
    ),
    pytest.param(
        "a.csv", "id,text\n1,x\n2,y\n1,z\n", {}, 3, "id", "1", "repeats row 1",
        id="repeated-id",
    ),
    pytest.param(
        "a.csv", "id,text\n1,x\n2,   \n", {}, 2, "text", "", "the text is empty",
        id="empty-text",
    ),
    pytest.param(
        "a.csv", "id,body\n1,x\n", {}, None, "text", None, "the project's text field",
        id="missing-text-column",
    ),
    pytest.param(
        "a.csv", "id,text\n1,x\n2,\"y\",extra\n", {}, 2, None, None,
        "line 3 of the file has 3 cells but the header has 2", id="malformed-csv",
    ),
    pytest.param(
        "a.csv", b"id,text\n1,x\n2,caf\xe9\n", {}, 2, "text", "\\xe9",
        "a.csv is not UTF-8 text: byte 0xe9 at line 3, row 2 (spreadsheet row 3), "
        "column “text”, byte offset 17.", id="bad-encoding",
    ),
    pytest.param(
        "a.csv", "id,text,text\n1,x,y\n", {}, None, "text", None, "appears twice",
        id="repeated-column",
    ),
    pytest.param("a.csv", "", {}, None, None, None, "the file is empty", id="empty-file"),
    pytest.param("a.csv", "id,text\n", {}, None, None, None, "no data rows", id="header-only"),
    pytest.param(
        "a.json", '[{"id": 1, "text": "x"},\n {"id": 2 "text": "y"}]', {}, None, None, None,
        "not valid JSON: Expecting ',' delimiter at line 2, column 11", id="malformed-json",
    ),
    pytest.param(
        "a.json", '{"id": 1, "text": "x"}', {}, None, None, None, "must be a list of objects",
        id="json-not-a-list",
    ),
    pytest.param(
        "a.json", '[{"id": 1, "text": "x"}, [2, "y"]]', {}, 2, None, None,
        "must be an object", id="json-item-not-an-object",
    ),
    pytest.param(
        "a.jsonl", '{"id": 1, "text": "x"}\n{"id": 2, "text": }\n', {}, 2, None, None,
        "line 2 is not valid JSON", id="malformed-jsonl",
    ),
    pytest.param(
        "a.jsonl", b'{"id": 1, "text": "x"}\n{"id": 2, "text": "\xff"}\n', {}, 2, None, "\\xff",
        "a.jsonl is not UTF-8 text: byte 0xff at line 2, byte offset 42.",
        id="jsonl-bad-encoding",
    ),
    pytest.param(
        "a.csv", b"id,t\xe9xt\n1,x\n", {}, None, None, "\\xe9",
        "a.csv is not UTF-8 text: byte 0xe9 at line 1, byte offset 4.", id="bad-encoding-header",
    ),
    pytest.param(
        "notcsv.csv", PNG, {}, None, None, None,
        "notcsv.csv is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (a PNG image).", id="png-named-csv",
    ),
    pytest.param(
        "notjson.json", PNG, {}, None, None, None,
        "notjson.json is not a text file (CSV, JSON or JSONL): it starts with bytes of a "
        "binary file (a PNG image).", id="png-named-json",
    ),
    pytest.param(
        "binary.png", PNG, {}, None, None, None,
        "binary.png is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (a PNG image).", id="png-unknown-format",
    ),
    pytest.param(
        "book.xlsx", b"PK\x03\x04" + bytes(60), {}, None, None, None,
        "book.xlsx is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (a ZIP archive, such as an Excel .xlsx workbook).", id="xlsx-unknown-format",
    ),
    pytest.param(
        "nul.jsonl", b'{"id": 1, "text": "x\x00"}\n', {}, None, None, None,
        "nul.jsonl is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (NUL bytes, which text never holds).", id="nul-bytes",
    ),
    pytest.param(
        "a.xlsx", "id,text\n1,x\n", {}, None, None, None, "can't tell the format",
        id="unknown-format",
    ),
    pytest.param(
        "ls.json",
        json.dumps([{"id": 1, "data": {"text": "x"}, "annotations": [{"result": [
            {"type": "choices", "value": {"choices": ["great", "other"]}}]}]}]),
        {}, 1, "annotations", "great, other", "several choices", id="label-studio-multi-choice",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "options", "row", "column", "value", "message"), BAD_INPUTS
)
def test_bad_input_names_the_place_and_writes_nothing(
    team, name, content, options, row, column, value, message
):
    SampleFactory(project=team.project, external_id="existing")
    before = state(team.project)

    job = run(team, name, content, **options)

    assert job.state == ImportJob.State.FAILED
    assert message in job.error["message"], job.error
    assert job.error["message"].startswith(name)
    assert (job.error["row"], job.error["column"]) == (row, column)
    if value is not None:
        assert job.error["value"] == value
    assert job.error["file"] == name
    assert state(team.project) == before
    assert AuditEvent.objects.filter(action="import.failed", target_id=str(job.pk)).exists()


def test_csv_rows_are_named_as_data_rows_and_spreadsheet_rows(team):
    job = run(team, "a.csv", "id,text,label\n1,x,\n2,y,grate\n", label_column="label")

    assert job.error["message"] == (
        "a.csv, row 2 (spreadsheet row 3), column “label”: unknown label “grate”; "
        "the project's labels are great, other."
    )


def test_a_bad_row_after_many_good_chunks_still_writes_nothing(team, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_ROWS", 10)
    lines = [f"{i},text {i}" for i in range(1, 96)] + ["96,"]
    job = run(team, "a.csv", "id,text\n" + "\n".join(lines) + "\n")

    assert (job.state, job.error["row"], job.error["column"]) == ("failed", 96, "text")
    assert state(team.project) == (0, 0, 0, 0)


def test_a_bad_number_names_row_column_and_value(team):
    team.project.fields = [
        {"name": "text", "kind": "text", "shown": True},
        {"name": "stars", "kind": "number", "shown": True},
    ]
    team.project.save()
    job = run(team, "a.csv", "id,text,stars\n1,x,4\n2,y,four\n")

    assert job.state == "failed"
    assert (job.error["row"], job.error["column"], job.error["value"]) == (2, "stars", "four")
    assert "this field's kind is number" in job.error["message"]


def test_an_oversized_upload_is_refused_before_reading(team, settings):
    settings.LEANML_MAX_UPLOAD_MB = 1
    content = "id,text\n" + "".join(f"{i},{'x' * 100}\n" for i in range(11_000))

    job = run(team, "big.csv", content)

    assert job.state == "failed"
    assert "the upload limit is 1 MB" in job.error["message"]
    assert not job.file  # not even stored
    assert state(team.project) == (0, 0, 0, 0)


# --- Re-import policies and duplicates ---------------------------------------------


def test_reimport_with_skip_leaves_existing_samples_alone(team):
    run(team, "a.csv", "id,text\n1,first\n2,second\n")
    before = state(team.project)

    job = run(team, "a.csv", "id,text\n1,changed\n3,third\n")

    assert job.state == "succeeded", job.error
    assert (job.counts["created"], job.counts["skipped"]) == (1, 1)
    assert samples(team.project)["1"].data == {"text": "first"}
    assert state(team.project) == (before[0] + 1, 0, before[2] + 1, 0)


def test_reimport_with_update_appends_a_revision_and_keeps_the_original(team):
    run(team, "a.csv", "id,text\n1,first\n2,second\n")
    ds = team.users["data_scientist"]

    job = run(
        team,
        "b.csv",
        "id,text,label\n1,first (fixed),\n2,second,other\n",
        policy="update",
        label_column="label",
    )

    assert job.state == "succeeded", job.error
    assert (job.counts["updated"], job.counts["unchanged"], job.counts["labels"]) == (1, 1, 1)
    by_id = samples(team.project)
    first = by_id["1"]
    assert first.data == {"text": "first (fixed)"}
    assert first.revision == 2
    assert first.content_hash == content_hash({"text": "first (fixed)"})
    revisions = list(SampleRevision.objects.filter(sample=first).order_by("number"))
    assert [(r.number, r.data, r.author) for r in revisions] == [
        (1, {"text": "first"}, None),
        (2, {"text": "first (fixed)"}, ds),
    ]
    second = by_id["2"]
    assert second.revision == 0  # same data: no revision
    assert second.consensus_label == team.classes[1]
    assert Annotation.objects.get(sample=second).origin == "import"

    again = run(team, "b.csv", "id,text,label\n2,second,other\n", policy="update",
                label_column="label")  # fmt: skip
    assert again.counts["labels"] == 0  # the same label is not appended twice
    assert Annotation.objects.filter(sample=second).count() == 1


def test_exact_duplicates_are_imported_counted_and_reported(team):
    SampleFactory(project=team.project, external_id="old", data={"text": "same as old"})

    job = run(team, "a.csv", "id,text\n1,same as old\n2,twice\n3,twice\n4,unique\n")

    assert job.state == "succeeded", job.error
    assert job.counts["created"] == 4
    assert job.counts["duplicates"] == 2
    assert "2 exact duplicates found — review and merge" in job.message


# --- Jobs: inline, queued, re-run, progress -----------------------------------------


def test_large_files_are_queued_on_commit_and_run_by_the_task(
    team, settings, django_capture_on_commit_callbacks
):
    settings.LEANML_INLINE_IMPORT_BYTES = 10
    with mock.patch("labelling.tasks.import_job_run_task.delay") as delay:
        delay.return_value.id = "celery-123"
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            job = run(team, "a.csv", "id,text\n1,x\n2,y\n")
            assert job.state == ImportJob.State.QUEUED
            assert not delay.called  # not before the job row is committed
        assert len(callbacks) == 1
    delay.assert_called_once_with(job.pk)
    job.refresh_from_db()
    assert job.celery_task_id == "celery-123"
    assert job.file.read() == b"id,text\n1,x\n2,y\n"

    done = import_job_run(job_id=job.pk)
    assert done.state == "succeeded", done.error
    assert done.counts["created"] == 2

    again = import_job_run(job_id=job.pk)  # a redelivered task
    assert again.state == "succeeded"
    assert again.finished_at == done.finished_at
    assert Sample.objects.filter(project=team.project).count() == 2


def test_the_celery_task_runs_the_job(team, settings, django_capture_on_commit_callbacks):
    from labelling.tasks import import_job_run_task

    settings.LEANML_INLINE_IMPORT_BYTES = 10
    with mock.patch("labelling.tasks.import_job_run_task.delay") as delay:
        delay.return_value.id = "celery-1"
        with django_capture_on_commit_callbacks(execute=True):
            job = run(team, "a.csv", "id,text\n1,x\n")

    result = import_job_run_task.apply(args=[job.pk]).get()

    assert result == {"job": job.pk, "state": "succeeded"}
    assert import_job_run_task.acks_late
    assert import_job_run_task.time_limit and import_job_run_task.soft_time_limit


def test_a_broker_outage_fails_the_job_instead_of_running_it_inline(
    team, settings, django_capture_on_commit_callbacks
):
    settings.LEANML_INLINE_IMPORT_BYTES = 10
    with (
        mock.patch(
            "labelling.tasks.import_job_run_task.delay", side_effect=ConnectionError("down")
        ),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = run(team, "a.csv", "id,text\n1,x\n")

    job.refresh_from_db()
    assert job.state == "failed"
    assert "could not be queued" in job.error["message"]
    assert Sample.objects.filter(project=team.project).count() == 0


def test_a_job_left_running_by_a_dead_worker_is_taken_over(team, settings):
    from django.utils import timezone

    settings.LEANML_INLINE_IMPORT_BYTES = 10
    with mock.patch("labelling.tasks.import_job_run_task.delay"):
        job = run(team, "a.csv", "id,text\n1,x\n")
    ImportJob.objects.filter(pk=job.pk).update(state="running", started_at=timezone.now())
    assert import_job_run(job_id=job.pk).state == "running"  # another worker has it

    ImportJob.objects.filter(pk=job.pk).update(
        started_at=timezone.now() - importing.STALE_AFTER * 2
    )
    assert import_job_run(job_id=job.pk).state == "succeeded"


def test_progress_while_writing_comes_from_the_cache(team):
    job = ImportJob.objects.create(
        project=team.project,
        created_by=team.users["owner"],
        original_name="a.csv",
        format="csv",
        state="running",
        progress=0.6,
        message="Writing 10 samples",
    )
    assert import_job_progress(job) == (0.6, "Writing 10 samples")
    cache.set(jobs.progress_key(job.pk), (0.8, "Writing 10 samples"))
    assert import_job_progress(job) == (0.8, "Writing 10 samples")
    job.state = "succeeded"
    assert import_job_progress(job) == (0.6, "Writing 10 samples")


def test_a_failed_write_rolls_everything_back(team, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(jobs, "write_updates", boom)
    job = run(team, "a.csv", "id,text,label\n1,x,great\n2,y,\n", label_column="label")

    assert job.state == "failed"
    assert "stopped unexpectedly (RuntimeError)" in job.error["message"]
    assert state(team.project) == (0, 0, 0, 0)


# --- Scripts --------------------------------------------------------------------------


def test_import_path_runs_in_process(team, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,x\n2,y\n")

    job = import_path(project=team.project, by=team.users["owner"], path=path)

    assert job.state == "succeeded", job.error
    assert job.original_name == "rows.csv"
    assert Sample.objects.filter(project=team.project).count() == 2


# --- Columns that look like labels ------------------------------------------------


def test_a_label_column_left_unchosen_is_imported_as_data_with_a_warning(team):
    job = run(team, "reviews.csv", "id,text,label\n1,x,great\n2,y,\n3,z,other\n")

    assert job.state == ImportJob.State.SUCCEEDED, job.error
    assert job.counts["labels"] == 0
    assert samples(team.project)["1"].data == {"text": "x", "label": "great"}
    assert job.counts["label_like"] == ["label"]
    assert job.counts["warnings"] == [
        "Column “label” looks like labels (all 2 values are classes of this project) but was "
        "imported as sample data; choose it as the label column to import labels."
    ]
    assert "Warning: “label” imported as sample data, not as labels" in job.message


def test_any_column_of_class_names_is_warned_about_and_a_label_named_one_always(team):
    job = run(
        team,
        "reviews.jsonl",
        '{"id": 1, "text": "x", "verdict": "great", "label": "meh"}\n'
        '{"id": 2, "text": "y", "verdict": " other ", "label": "great", "stars": 5}\n',
    )

    assert job.state == ImportJob.State.SUCCEEDED, job.error
    assert job.counts["label_like"] == ["label", "verdict"]
    assert "“meh” is not" in job.counts["warnings"][0]
    assert job.counts["warnings"][0].startswith("Column “label” is named like a label column")
    assert job.counts["warnings"][1].startswith("Column “verdict” looks like labels (all 2 ")


@pytest.mark.parametrize(
    ("content", "options"),
    [
        pytest.param("id,text,label\n1,x,great\n", {"label_column": "label"}, id="chosen"),
        pytest.param("id,text,tag\n1,great,x\n2,other,\n", {}, id="text-of-class-names"),
        pytest.param("id,text,tag\n1,x,great\n2,y,meh\n", {}, id="not-all-classes"),
        pytest.param("id,text,label\n1,x,\n", {}, id="label-column-empty"),
    ],
)
def test_no_warning_when_nothing_looks_like_unimported_labels(team, content, options):
    job = run(team, "reviews.csv", content, **options)

    assert job.state == ImportJob.State.SUCCEEDED, job.error
    assert "warnings" not in job.counts
    assert "Warning" not in job.message


def test_label_studio_files_are_not_warned_about(team):
    tasks = [{"id": 1, "data": {"text": "x", "label": "great"}}]
    job = run(team, "ls.json", json.dumps(tasks))

    assert job.state == ImportJob.State.SUCCEEDED, job.error
    assert job.format == ImportJob.Format.LABEL_STUDIO
    assert "warnings" not in job.counts


def test_management_command_prints_the_warning(team, tmp_path, capsys):
    path = tmp_path / "rows.csv"
    path.write_text("id,text,label\n1,x,great\n")

    call_command("import_samples", str(team.project.pk), str(path), "--user", "owner")

    out = capsys.readouterr().out
    assert "Warning: Column “label” looks like labels" in out
    assert "warnings:" not in out


def test_management_command_prints_counts(team, tmp_path, capsys):
    path = tmp_path / "rows.csv"
    path.write_text("id,text,label\n1,x,great\n2,y,\n")

    call_command(
        "import_samples", str(team.project.pk), str(path), "--user", "owner",
        "--label-column", "label",
    )  # fmt: skip

    out = capsys.readouterr().out
    assert "created: 2" in out
    assert "labels: 1" in out
    assert Sample.objects.filter(project=team.project).count() == 2


def test_management_command_fails_loudly(team, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,x\n1,y\n")

    with pytest.raises(CommandError, match=r"rows.csv, row 2 .*repeats row 1"):
        call_command("import_samples", str(team.project.pk), str(path), "--user", "owner")
    assert Sample.objects.filter(project=team.project).count() == 0


def test_management_command_checks_the_user_and_project(team, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,text\n1,x\n")
    with pytest.raises(CommandError, match="No user"):
        call_command("import_samples", str(team.project.pk), str(path), "--user", "nobody")
    with pytest.raises(CommandError, match="No project"):
        call_command("import_samples", "999999", str(path), "--user", "owner")
    assert Project.objects.count() == 2


def test_a_value_longer_than_the_limit_is_refused_naming_row_and_column(team):
    # The same limit as a correction on the sample page (labelling.limits).
    longest = "x" * MAX_VALUE_CHARS
    job = run(team, "a.csv", f"id,text\n1,{longest}\n2,{longest}y\n")

    assert job.state == "failed"
    assert (job.error["row"], job.error["column"]) == (2, "text")
    assert f"is {MAX_VALUE_CHARS + 1:,} characters long" in job.error["message"]
    assert f"at most {MAX_VALUE_CHARS:,}" in job.error["message"]
    assert state(team.project) == (0, 0, 0, 0)
    assert run(team, "b.csv", f"id,text\n1,{longest}\n").state == "succeeded"

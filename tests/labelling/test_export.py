"""Exports: CSV (formula-safe), JSON Lines and Label Studio JSON, streamed; the
Label Studio round trip; the download view's permissions."""

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from labelling.models import Annotation, Sample
from labelling.services.consensus import consensus_refresh
from labelling.services.exporting import csv_safe, export_stream
from labelling.services.importing import import_job_create
from labelling.services.projects import project_create
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


def label(team, sample, role, label_class, *, kind="label"):
    Annotation.objects.create(
        project=team.project,
        sample=sample,
        annotator=team.users[role],
        kind=kind,
        label=label_class if kind == "label" else None,
    )


@pytest.fixture
def labelled(team):
    """Three samples: agreed (two annotators), disputed (a tie), unlabelled."""
    great, other = team.classes
    team.project.overlap = 2
    team.project.fields = [
        {"name": "text", "kind": "text", "shown": True},
        {"name": "stars", "kind": "number", "shown": True},
    ]
    team.project.save()
    agreed = SampleFactory(
        project=team.project, external_id="a1", data={"text": "Nice", "stars": 5}
    )
    disputed = SampleFactory(
        project=team.project, external_id="d1", data={"text": '=HYPERLINK("x")', "stars": -3}
    )
    unlabelled = SampleFactory(project=team.project, external_id="u1", data={"text": "plain"})
    label(team, agreed, "expert", great)
    label(team, agreed, "owner", other)
    label(team, agreed, "owner", great)  # the owner changed their mind: latest counts
    label(team, disputed, "expert", great)
    label(team, disputed, "owner", other)
    label(team, unlabelled, "expert", None, kind="skip")
    consensus_refresh(project=team.project, sample_ids=[agreed.pk, disputed.pk, unlabelled.pk])
    return agreed, disputed, unlabelled


def text_of(project, fmt, **kwargs):
    return "".join(export_stream(project=project, fmt=fmt, **kwargs).chunks)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        (-3, -3),  # a number from a number field is not a formula
        (None, ""),
        ({"k": "=x"}, '{"k": "=x"}'),
    ],
)
def test_csv_cells_are_safe_from_formula_injection(value, expected):
    assert csv_safe(value) == expected


def test_csv_export_has_consensus_fields_and_each_annotators_label(team, labelled):
    rows = list(csv.reader(io.StringIO(text_of(team.project, "csv"))))

    assert rows[0] == [
        "external_id",
        "split",
        "status",
        "consensus_state",
        "consensus_label",
        "text",
        "stars",
        "label:expert",
        "label:owner",
    ]
    by_id = {row[0]: row for row in rows[1:]}
    agreed, disputed, unlabelled = labelled
    assert by_id["a1"] == [
        "a1", agreed.split, "active", "agreed", "great", "Nice", "5", "great", "great"
    ]  # fmt: skip
    assert by_id["d1"][3:] == ["disputed", "", '\'=HYPERLINK("x")', "-3", "great", "other"]
    assert by_id["u1"][3:] == ["none", "", "plain", "", "", ""]  # a skip is no label


def test_csv_export_streams_in_keyset_batches(team, django_assert_max_num_queries):
    for i in range(25):
        SampleFactory(project=team.project, external_id=f"s{i:02d}")
    export = export_stream(project=team.project, fmt="csv", batch_size=10)

    # classes, annotators, fields: then two queries per batch of 10, plus the empty last one
    with django_assert_max_num_queries(3 + 2 * 3 + 1):
        chunks = list(export.chunks)

    assert len(chunks) >= 3  # streamed, not built whole
    ids = [row[0] for row in csv.reader(io.StringIO("".join(chunks)))][1:]
    assert ids == [f"s{i:02d}" for i in range(25)]
    assert export.filename.startswith("reviews-") and export.filename.endswith(".csv")


def test_jsonl_export(team, labelled):
    records = [json.loads(line) for line in text_of(team.project, "jsonl").splitlines()]

    by_id = {r["external_id"]: r for r in records}
    assert by_id["a1"]["consensus_state"] == "agreed"
    assert by_id["a1"]["consensus_label"] == "great"
    assert by_id["a1"]["data"] == {"text": "Nice", "stars": 5}
    assert by_id["a1"]["labels"] == {"expert": "great", "owner": "great"}
    assert by_id["d1"]["labels"] == {"expert": "great", "owner": "other"}
    assert by_id["u1"]["labels"] == {}


def test_label_studio_export_has_tasks_with_choices_and_ground_truth(team, labelled):
    tasks = json.loads(text_of(team.project, "label_studio", batch_size=2))

    by_id = {t["data"]["id"]: t for t in tasks}
    agreed = by_id["a1"]
    assert agreed["data"] == {"id": "a1", "text": "Nice", "stars": 5}
    results = [
        (a["ground_truth"], a["result"][0]["value"]["choices"]) for a in agreed["annotations"]
    ]
    assert results == [(False, ["great"]), (False, ["great"]), (True, ["great"])]
    assert agreed["annotations"][0]["result"][0]["type"] == "choices"
    assert agreed["annotations"][0]["result"][0]["to_name"] == "text"
    assert agreed["meta"]["consensus_state"] == "agreed"
    # A tie has no consensus label: no ground truth for it.
    assert [a["ground_truth"] for a in by_id["d1"]["annotations"]] == [False, False]
    assert by_id["u1"]["annotations"] == []


def test_label_studio_round_trip_keeps_the_labels(team, labelled):
    exported = text_of(team.project, "label_studio").encode()
    owner = team.users["owner"]
    copy = project_create(
        by=owner, name="Copy", label_classes=["great", "other"], fields=team.project.fields
    )

    job = import_job_create(
        project=copy,
        by=owner,
        uploaded_file=SimpleUploadedFile("reviews-label-studio.json", exported),
    )

    assert job.state == "succeeded", job.error
    assert job.format == "label_studio"

    def labels(project):
        return {
            s.external_id: (s.data, s.consensus_label.name if s.consensus_label else None)
            for s in Sample.objects.filter(project=project).select_related("consensus_label")
        }

    assert labels(copy) == labels(team.project)
    assert labels(copy)["a1"] == ({"text": "Nice", "stars": 5}, "great")


def test_an_export_of_an_empty_project_is_valid(team):
    assert json.loads(text_of(team.project, "label_studio")) == []
    assert text_of(team.project, "jsonl").strip() == ""
    assert len(list(csv.reader(io.StringIO(text_of(team.project, "csv"))))) == 1


def test_unknown_format_is_refused(team):
    with pytest.raises(ValueError, match="format must be one of"):
        export_stream(project=team.project, fmt="xlsx")


# --- The download view ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["product_manager", "data_scientist", "owner"])
def test_export_view_streams_a_download(team, labelled, role):
    response = team.client(role).get(
        reverse("labelling:export", args=[team.project.pk]), {"format": "csv"}
    )

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="reviews-')
    body = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in body


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("jsonl", "application/x-ndjson"), ("label_studio", "application/json")],
)
def test_export_view_other_formats(team, labelled, fmt, content_type):
    response = team.client("owner").get(
        reverse("labelling:export", args=[team.project.pk]), {"format": fmt}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    assert b"".join(response.streaming_content)


def test_export_view_rejects_an_expert(team, labelled):
    response = team.client("expert").get(reverse("labelling:export", args=[team.project.pk]))
    assert response.status_code == 403


def test_export_view_hides_the_project_from_outsiders(team, labelled):
    response = team.client(team.outsider).get(reverse("labelling:export", args=[team.project.pk]))
    assert response.status_code == 404


def test_export_view_sends_anonymous_users_to_login(team):
    response = Client().get(reverse("labelling:export", args=[team.project.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_export_view_rejects_an_unknown_format(team):
    response = team.client("owner").get(
        reverse("labelling:export", args=[team.project.pk]), {"format": "xlsx"}
    )
    assert response.status_code == 400
    assert b"format must be one of csv, jsonl, label_studio" in response.content

"""The import and export API: create, list and read jobs; stream exports."""

import json
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token

from labelling.models import Annotation, ImportJob, QueueItem, Sample
from labelling.services.importing import import_job_run
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


def imports_url(team, job=None):
    base = f"/api/v1/projects/{team.project.pk}/imports/"
    return f"{base}{job.pk}/" if job else base


def export_url(team):
    return f"/api/v1/projects/{team.project.pk}/export/"


def upload(client, team, content, name="rows.csv", **fields):
    data = {"file": SimpleUploadedFile(name, content.encode()), **fields}
    return client.post(imports_url(team), data)  # multipart


def counts(team):
    project = team.project
    return (
        Sample.objects.filter(project=project).count(),
        Annotation.objects.filter(project=project).count(),
        QueueItem.objects.filter(project=project).count(),
    )


def test_it_imports_a_small_file_and_answers_201_with_the_job(team):
    response = upload(
        team.client("data_scientist"),
        team,
        "id,text,label\n1,x,great\n2,y,\n",
        label_column="label",
        policy="skip",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    job = ImportJob.objects.get()
    assert response["Location"] == imports_url(team, job)
    assert body["id"] == job.pk
    assert body["state"] == "succeeded"
    assert body["progress"] == 1.0
    assert body["format"] == "csv"
    assert body["created_by"] == "data_scientist"
    assert body["counts"]["created"] == 2
    assert body["counts"]["labels"] == 1
    assert body["error"] is None
    assert body["page"] == job.get_absolute_url()
    assert counts(team) == (2, 1, 1)


def test_a_bad_file_answers_400_naming_row_and_column_and_keeps_the_failed_job(team):
    response = upload(
        team.client("owner"),
        team,
        "id,text,label\n1,x,great\n2,y,grate\n",
        label_column="label",
    )

    assert response.status_code == 400
    body = response.json()
    assert body["row"] == 2
    assert body["column"] == "label"
    assert body["field"] == "label"
    assert body["value"] == "grate"
    assert body["file"] == "rows.csv"
    assert "unknown label “grate”" in body["message"]
    assert body["job"]["state"] == "failed"
    assert ImportJob.objects.get().state == "failed"
    assert counts(team) == (0, 0, 0)


def test_a_bad_form_field_answers_400_in_the_house_format(team):
    response = upload(team.client("owner"), team, "id,text\n1,x\n", policy="overwrite")

    assert response.status_code == 400
    assert response.json()["field"] == "policy"
    assert not ImportJob.objects.exists()


def test_a_missing_file_is_a_400(team):
    response = team.client("owner").post(imports_url(team), {"policy": "skip"})
    assert response.status_code == 400
    assert response.json()["field"] == "file"


def test_an_explicit_format_wins_over_the_file_name(team):
    content = json.dumps([{"id": 1, "text": "x"}])
    response = upload(team.client("owner"), team, content, name="export.txt", format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["format"] == "json"


def test_large_files_come_back_queued(team, settings, django_capture_on_commit_callbacks):
    settings.LEANML_INLINE_IMPORT_BYTES = 5
    with mock.patch("labelling.tasks.import_job_run_task.delay") as delay:
        delay.return_value.id = "task-1"
        with django_capture_on_commit_callbacks(execute=True):
            response = upload(team.client("owner"), team, "id,text\n1,x\n")

    assert response.status_code == 201
    assert response.json()["state"] == "queued"
    delay.assert_called_once_with(response.json()["id"])
    import_job_run(job_id=response.json()["id"])
    detail = team.client("expert").get(response["Location"])
    assert detail.json()["state"] == "succeeded"
    assert detail.json()["counts"]["created"] == 1


@pytest.mark.parametrize("role", ["expert", "product_manager"])
def test_roles_without_import_get_403_and_nothing_is_stored(team, role):
    response = upload(team.client(role), team, "id,text\n1,x\n")

    assert response.status_code == 403
    assert response.json()["message"]
    assert not ImportJob.objects.exists()
    assert counts(team) == (0, 0, 0)


def test_outsiders_get_404(team):
    response = upload(team.client(team.outsider), team, "id,text\n1,x\n")
    assert response.status_code == 404
    assert team.client(team.outsider).get(imports_url(team)).status_code == 404
    assert not ImportJob.objects.exists()


def test_anonymous_requests_are_refused(team):
    assert upload(Client(), team, "id,text\n1,x\n").status_code == 403
    assert Client().get(imports_url(team)).status_code == 403
    assert Client().get(export_url(team)).status_code == 403
    assert not ImportJob.objects.exists()


def test_token_auth_works(team):
    token = Token.objects.create(user=team.users["owner"])
    response = Client(headers={"Authorization": f"Token {token.key}"}).post(
        imports_url(team), {"file": SimpleUploadedFile("a.csv", b"id,text\n1,x\n")}
    )
    assert response.status_code == 201


def test_members_list_jobs_newest_first_and_read_one(team):
    first = upload(team.client("owner"), team, "id,text\n1,x\n").json()
    second = upload(team.client("owner"), team, "id,text\n1,x\n").json()

    listing = team.client("expert").get(imports_url(team))

    assert listing.status_code == 200
    assert [job["id"] for job in listing.json()["results"]] == [second["id"], first["id"]]
    job = ImportJob.objects.get(pk=first["id"])
    detail = team.client("product_manager").get(imports_url(team, job))
    assert detail.status_code == 200
    assert detail.json()["counts"]["created"] == 1


def test_a_job_of_another_project_is_404(team):
    job = ImportJob.objects.create(
        project=team.other_project,
        created_by=team.outsider,
        original_name="theirs.csv",
        format="csv",
    )
    assert team.client("owner").get(imports_url(team, job)).status_code == 404


# --- Export ---------------------------------------------------------------------------


@pytest.fixture
def sample(team):
    sample = SampleFactory(project=team.project, external_id="s1", data={"text": "@SUM(1)"})
    return sample


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("csv", "text/csv"),
        ("jsonl", "application/x-ndjson"),
        ("label_studio", "application/json"),
    ],
)
def test_a_product_manager_may_export(team, sample, fmt, content_type):
    response = team.client("product_manager").get(export_url(team), {"format": fmt})

    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    assert "attachment; filename=" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert "s1" in body


def test_csv_export_over_the_api_is_formula_safe(team, sample):
    response = team.client("owner").get(export_url(team))
    body = b"".join(response.streaming_content).decode()
    assert "'@SUM(1)" in body


def test_an_expert_may_not_export(team, sample):
    response = team.client("expert").get(export_url(team), {"format": "csv"})
    assert response.status_code == 403
    assert response.json()["message"]


def test_outsiders_may_not_export(team, sample):
    response = team.client(team.outsider).get(export_url(team), {"format": "csv"})
    assert response.status_code == 404


def test_an_unknown_export_format_is_a_json_400(team):
    response = team.client("owner").get(export_url(team), {"format": "xlsx"})
    assert response.status_code == 400
    assert response.json()["field"] == "format"


def test_the_schema_describes_import_and_export(team):
    response = team.client("owner").get("/api/schema/", {"format": "json"})
    schema = response.json()
    paths = schema["paths"]
    assert "post" in paths["/api/v1/projects/{project_pk}/imports/"]
    assert "get" in paths["/api/v1/projects/{project_pk}/imports/{id}/"]
    export = paths["/api/v1/projects/{project_pk}/export/"]["get"]
    assert set(export["responses"]["200"]["content"]) == {
        "text/csv",
        "application/x-ndjson",
        "application/json",
    }

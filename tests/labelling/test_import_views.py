"""The import / export page, the upload form and the job page."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from labelling.models import ImportJob, Sample
from labelling.services.importing.jobs import progress_key
from tests.factories import SampleFactory

pytestmark = pytest.mark.django_db


def url(team):
    return reverse("labelling:import_list", args=[team.project.pk])


def post(client, team, content, name="reviews.csv", **fields):
    data = {
        "file": SimpleUploadedFile(name, content.encode()),
        "format": "",
        "policy": "skip",
        "id_column": "id",
        "label_column": "",
        **fields,
    }
    return client.post(url(team), data)


def test_it_shows_the_form_exports_and_past_jobs(team):
    ImportJob.objects.create(
        project=team.project,
        created_by=team.users["owner"],
        original_name="old-<b>file</b>.csv",
        format="csv",
        state="succeeded",
        message="Imported 3 rows",
    )
    response = team.client("data_scientist").get(url(team))

    assert response.status_code == 200
    body = response.content.decode()
    assert 'enctype="multipart/form-data"' in body
    assert "?format=label_studio" in body
    assert "old-&lt;b&gt;file&lt;/b&gt;.csv" in body  # escaped
    assert "Import / export" in body  # the project nav link


def test_a_product_manager_sees_exports_but_no_upload_form(team):
    body = team.client("product_manager").get(url(team)).content.decode()
    assert "?format=csv" in body
    assert 'enctype="multipart/form-data"' not in body


def test_an_expert_may_look_but_not_import(team):
    client = team.client("expert")
    body = client.get(url(team)).content.decode()
    assert "multipart/form-data" not in body
    assert "?format=csv" not in body

    response = post(client, team, "id,text\n1,x\n")

    assert response.status_code == 403
    assert not ImportJob.objects.exists()
    assert not Sample.objects.exists()


def test_outsiders_get_404(team):
    client = team.client(team.outsider)
    assert client.get(url(team)).status_code == 404
    assert post(client, team, "id,text\n1,x\n").status_code == 404
    assert not Sample.objects.exists()


def test_anonymous_users_go_to_login(team):
    response = post(Client(), team, "id,text\n1,x\n")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not ImportJob.objects.exists()


def test_uploading_a_small_file_imports_it_at_once(team):
    response = post(team.client("data_scientist"), team, "id,text\n1,x\n2,y\n")

    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == job.get_absolute_url()
    assert job.state == "succeeded"
    assert job.created_by == team.users["data_scientist"]
    assert Sample.objects.filter(project=team.project).count() == 2
    page = team.client("data_scientist").get(response["Location"]).content.decode()
    assert "Imported 2 rows: 2 new." in page
    assert "hx-trigger" not in page  # finished: no polling


def test_a_bad_file_shows_row_column_and_value_and_imports_nothing(team):
    response = post(
        team.client("owner"),
        team,
        "id,text,label\n1,x,great\n2,<script>alert(1)</script>,grate\n",
        label_column="label",
    )

    job = ImportJob.objects.get()
    assert job.state == "failed"
    page = team.client("owner").get(response["Location"]).content.decode()
    assert "Nothing was imported." in page
    assert "unknown label “grate”" in page
    assert "<th>Row</th><td>2" in page
    assert "spreadsheet row 3" in page
    assert "<th>Column</th><td>label</td>" in page
    assert "<code>grate</code>" in page
    assert "<script>alert(1)" not in page
    assert not Sample.objects.exists()


def test_a_label_column_left_blank_is_warned_about_on_the_page_escaped(team):
    response = post(team.client("owner"), team, "id,text,<i>label</i>,label\n1,x,great,great\n")

    job = ImportJob.objects.get()
    assert job.state == "succeeded"
    page = team.client("owner").get(response["Location"]).content.decode()
    assert 'class="msg-warning"' in page  # the redirect's banner is a warning too
    assert (
        "Column “label” looks like labels (its one value is a class of this project) but was "
        "imported as sample data; choose it as the label column to import labels." in page
    )
    assert "Column “&lt;i&gt;label&lt;/i&gt;” looks like labels" in page
    assert "<i>label</i>" not in page


def test_a_binary_file_is_named_as_such_and_its_format_not_guessed(team):
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452")
    client = team.client("owner")
    for name in ("binary.png", "notcsv.csv"):
        data = {"file": SimpleUploadedFile(name, png), "policy": "skip", "id_column": "id"}
        response = client.post(url(team), data)
        job = ImportJob.objects.get(original_name=name)
        page = client.get(response["Location"]).content.decode()
        assert (
            f"{name} is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
            "file (a PNG image)." in page
        )
        assert "columns are" not in page
    refused = ImportJob.objects.get(original_name="binary.png")
    page = client.get(refused.get_absolute_url()).content.decode()
    header = page.split("</h1>")[1].split("</p>")[0]
    assert header.startswith('\n<p class="muted">Skip samples whose id exists'), header
    assert "CSV" not in header  # never read as anything
    assert job.started_at is not None  # notcsv.csv was read as the CSV its name says


def test_a_form_without_a_file_is_shown_again(team):
    response = team.client("owner").post(url(team), {"policy": "skip", "id_column": "id"})
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_duplicates_link_to_the_review_page(team):
    SampleFactory(project=team.project, data={"text": "same"})
    response = post(team.client("owner"), team, "id,text\n1,same\n")

    page = team.client("owner").get(response["Location"]).content.decode()
    assert "1 exact duplicates found" in page
    assert reverse("labelling:duplicates", args=[team.project.pk]) in page


def test_a_running_job_polls_and_shows_cached_progress(team, settings):
    job = ImportJob.objects.create(
        project=team.project,
        created_by=team.users["owner"],
        original_name="big.csv",
        format="csv",
        state="running",
        progress=0.6,
        message="Writing 1,000,000 samples",
    )
    from django.core.cache import cache

    cache.set(progress_key(job.pk), (0.75, "Writing 1,000,000 samples"))
    detail = reverse("labelling:import_detail", args=[team.project.pk, job.pk])

    page = team.client("expert").get(detail).content.decode()  # VIEW is enough to watch
    partial = team.client("expert").get(detail, headers={"HX-Request": "true"}).content.decode()

    assert 'hx-trigger="every 1s"' in page
    assert 'aria-valuenow="75"' in page
    assert "Writing 1,000,000 samples" in page
    assert partial.lstrip().startswith('<section class="card" id="import-status"')
    assert "<html" not in partial
    assert 'hx-trigger="every 1s"' in partial


def test_a_job_of_another_project_is_404(team):
    job = ImportJob.objects.create(
        project=team.other_project,
        created_by=team.outsider,
        original_name="theirs.csv",
        format="csv",
    )
    response = team.client("owner").get(
        reverse("labelling:import_detail", args=[team.project.pk, job.pk])
    )
    assert response.status_code == 404
    response = team.client(team.outsider).get(
        reverse("labelling:import_detail", args=[team.project.pk, job.pk])
    )
    assert response.status_code == 404


def test_the_nav_offers_import_export_only_to_roles_that_may_do_either(team):
    page = f"/projects/{team.project.pk}/"
    link = f'href="/projects/{team.project.pk}/imports/"'
    shown = {
        role: link in team.client(role).get(page).content.decode()
        for role in ("expert", "data_scientist", "product_manager", "owner")
    }
    assert shown == {
        "expert": False,
        "data_scientist": True,
        "product_manager": True,
        "owner": True,
    }

"""The prediction log upload page: the API's checks and all-or-nothing, by hand."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from monitoring.models import PredictionLog

pytestmark = pytest.mark.django_db

HEADER = "request_id,timestamp,model_version,predicted,p_great,p_other,review\n"


def _upload(client, team, name, text):
    url = f"/projects/{team.project.pk}/predictions/upload/"
    content = text if isinstance(text, bytes) else text.encode()
    return client.post(url, {"file": SimpleUploadedFile(name, content)})


def test_a_data_scientist_uploads_a_csv_and_a_second_upload_changes_nothing(team, versions):
    client = team.client("data_scientist")
    text = (
        HEADER
        + "a,2026-03-01T00:00:00Z,1,great,0.9,0.1,yum\nb,2026-03-01T00:01:00Z,2,other,0.2,0.8,meh\n"
    )
    response = _upload(client, team, "logs.csv", text)
    assert response.status_code == 200
    assert response.context["result"] == {"stored": 2, "already_stored": 0}
    response = _upload(client, team, "logs.csv", text)
    assert response.context["result"] == {"stored": 0, "already_stored": 2}
    assert PredictionLog.objects.count() == 2


def test_a_bad_row_is_shown_escaped_and_nothing_is_stored(team, versions):
    text = (
        HEADER
        + "a,2026-03-01T00:00:00Z,1,great,0.9,0.1,yum\nb,2026-03-01T00:01:00Z,1,<b>x</b>,0.2,0.8,meh\n"
    )
    response = _upload(team.client("owner"), team, "logs.csv", text)
    assert response.status_code == 400
    content = response.content.decode()
    assert "Nothing was stored." in content
    assert "&lt;b&gt;x&lt;/b&gt;" in content and "<b>x</b>" not in content
    assert not PredictionLog.objects.exists()


def test_an_unknown_file_type_is_refused(team, versions):
    response = _upload(team.client("owner"), team, "logs.xlsx", "x")
    assert response.status_code == 400
    assert "name it .csv, .jsonl or .json" in response.content.decode()


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000300000003008060000005702f987")


@pytest.mark.parametrize("name", ["notcsv.csv", "logs.jsonl", "logs.json", "binary.png"])
def test_a_binary_file_is_named_as_such_not_as_a_codec_error(team, versions, name):
    response = _upload(team.client("owner"), team, name, PNG)
    assert response.status_code == 400
    assert response.context["error"].message == (
        f"{name} is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (a PNG image)."
    )
    assert response.context["error"].field == "file"
    assert "codec" not in response.content.decode()
    assert not PredictionLog.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("logs.csv", (HEADER + "a,2026-03-01T00:00:00Z,1,great,0.9,0.1,caf\xe9\n").encode("latin-1"),
         "byte 0xe9 at line 2, byte offset 110"),
        ("logs.json", b'[{"request_id": "a", "review": "\x89"}]', "byte 0x89 at line 1"),
        ("logs.jsonl", b'{"request_id": "a"}\n\n{"review": "\xff"}\n', "byte 0xff at line 3"),
    ],
)  # fmt: skip
def test_text_that_is_not_utf8_is_located(team, versions, name, content, where):
    response = _upload(team.client("owner"), team, name, content)
    assert response.status_code == 400
    message = response.context["error"].message
    assert message.startswith(f"{name} is not UTF-8 text: {where}"), message
    assert "codec" not in message
    assert not PredictionLog.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("logs.json", b'{"request_id": "a"}',
         "logs.json must be a JSON list of objects (one per prediction)."),
        ("logs.json", b"[]", "The batch is empty."),
        ("logs.csv", HEADER.encode(), "The batch is empty."),
    ],
)  # fmt: skip
def test_a_file_without_rows_is_refused_about_the_file(team, versions, name, content, message):
    response = _upload(team.client("owner"), team, name, content)
    assert response.status_code == 400
    assert response.context["error"].message == message
    assert response.context["error"].field == "file"
    assert not PredictionLog.objects.exists()


@pytest.mark.parametrize("who", ["expert", "product_manager"])
def test_only_members_who_train_models_upload(team, versions, who):
    response = _upload(team.client(who), team, "logs.csv", HEADER)
    assert response.status_code == 403

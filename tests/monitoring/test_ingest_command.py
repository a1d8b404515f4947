"""manage.py ingest_predictions: files in chunks, each all-or-nothing."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from monitoring.models import PredictionLog

from .conftest import log_row

pytestmark = pytest.mark.django_db


def _csv(path, rows, bad_row=None):
    lines = ["request_id,timestamp,model_version,predicted,p_great,p_other,review"]
    for i in range(rows):
        predicted = "nope" if i + 1 == bad_row else "great"
        lines.append(f"r{i},2026-03-01T00:00:00Z,1,{predicted},0.9,0.1,text {i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_it_streams_a_csv_in_chunks_and_is_idempotent(team, versions, tmp_path):
    path = _csv(tmp_path / "logs.csv", 2_500)
    out = io.StringIO()
    call_command("ingest_predictions", team.project.pk, path, chunk_rows=1_000, stdout=out)
    assert PredictionLog.objects.count() == 2_500
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("1,000 rows read: 1,000 stored")
    assert lines[2].startswith("2,500 rows read: 2,500 stored")
    out = io.StringIO()
    call_command("ingest_predictions", team.project.pk, path, chunk_rows=1_000, stdout=out)
    assert "2,500 already stored" in out.getvalue()
    assert PredictionLog.objects.count() == 2_500


def test_a_bad_row_stops_the_run_naming_its_row_in_the_file(team, versions, tmp_path):
    path = _csv(tmp_path / "logs.csv", 2_500, bad_row=2_345)
    with pytest.raises(CommandError) as caught:
        call_command(
            "ingest_predictions", team.project.pk, path, chunk_rows=1_000, stdout=io.StringIO()
        )
    message = str(caught.value)
    assert "Rows 2,001 onwards were not stored" in message
    assert "row 2345, predicted: unknown class “nope”" in message
    assert "The first 2,000 rows are stored" in message
    assert PredictionLog.objects.count() == 2_000


def test_it_reads_json_lines(team, versions, tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join(json.dumps(log_row(i)) for i in range(7)) + "\n")
    call_command("ingest_predictions", team.project.pk, path, chunk_rows=3, stdout=io.StringIO())
    assert PredictionLog.objects.count() == 7


def test_a_bad_json_line_is_named_by_its_line_in_the_file(team, versions, tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join(json.dumps(log_row(i)) for i in range(5)) + "\n{oops\n")
    with pytest.raises(CommandError, match="row 6, row: not valid JSON"):
        call_command(
            "ingest_predictions", team.project.pk, path, chunk_rows=4, stdout=io.StringIO()
        )
    assert PredictionLog.objects.count() == 4


def test_a_binary_file_is_refused_before_reading(team, versions, tmp_path):
    path = tmp_path / "logs.csv"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CommandError) as caught:
        call_command("ingest_predictions", team.project.pk, path, stdout=io.StringIO())
    assert str(caught.value) == (
        "logs.csv is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
        "file (a ZIP archive, such as an Excel .xlsx workbook)."
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_that_is_not_utf8_is_named_by_its_line_in_the_file(team, versions, tmp_path, suffix):
    if suffix == ".csv":
        path = _csv(tmp_path / "logs.csv", 7)
        lines = path.read_bytes().splitlines(keepends=True)
    else:
        path = tmp_path / "logs.jsonl"
        lines = [json.dumps(log_row(i)).encode() + b"\n" for i in range(7)]
    lines[6] = lines[6].replace(b"e", b"\xe9", 1)  # line 7 of the file
    path.write_bytes(b"".join(lines))
    with pytest.raises(CommandError) as caught:
        call_command(
            "ingest_predictions", team.project.pk, path, chunk_rows=4, stdout=io.StringIO()
        )
    assert f"logs{suffix} is not UTF-8 text: byte 0xe9 at line 7," in str(caught.value)
    assert "codec" not in str(caught.value)


def test_an_unknown_project_is_named(tmp_path, db):
    path = _csv(tmp_path / "logs.csv", 1)
    with pytest.raises(CommandError, match="No project with id 999"):
        call_command("ingest_predictions", 999, path)

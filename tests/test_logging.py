"""The server log: a refused request is one line, a server error keeps its traceback."""

import logging
import sys

from leanml_site.log_filters import ClientErrorWithoutTraceback


def _records(caplog):
    return [r for r in caplog.records if r.name == "django.request"]


def test_a_refused_page_is_logged_in_one_line_without_traceback(team, caplog):
    client = team.client("expert")
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get(f"/projects/{team.project.pk}/export/")
        assert response.status_code == 403
        response = client.get(f"/projects/{team.other_project.pk}/")
        assert response.status_code == 404
    records = _records(caplog)
    assert [r.status_code for r in records] == [403, 404]
    assert all(r.exc_info is None for r in records)
    assert "Forbidden" in records[0].getMessage()
    assert f"/projects/{team.project.pk}/export/" in records[0].getMessage()


def test_a_server_error_keeps_its_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), exc_info
    )
    record.status_code = 500
    assert ClientErrorWithoutTraceback().filter(record)
    assert record.exc_info is exc_info

"""POST /api/v1/projects/<pk>/predictions/: bulk prediction logs."""

import json

import pytest
from django.test import Client

from monitoring.models import PredictionLog
from monitoring.services.parsing import MAX_ROWS

from .conftest import URL, as_jsonl, log_row, post_json

pytestmark = pytest.mark.django_db


def test_it_stores_a_json_batch(team, versions, key_client):
    client = key_client("ingest")
    response = post_json(client, URL.format(team.project.pk), [log_row(i) for i in range(3)])
    assert response.status_code == 200, response.json()
    assert response.json() == {"stored": 3, "already_stored": 0}
    log = PredictionLog.objects.get(project=team.project, request_id="req-1")
    assert log.model_version == versions[0]
    assert log.data == {"review": "Tasty snack number 1", "product": "B00X"}
    assert log.probabilities == {"great": 0.8, "other": 0.2}
    assert log.confidence == pytest.approx(0.8)
    assert log.latency_ms == 12.5
    assert log.segment == {"country": "DE"}
    assert log.timestamp.isoformat() == "2026-03-01T12:01:00+00:00"


def test_it_stores_json_lines(team, versions, key_client):
    response = key_client("ingest").post(
        URL.format(team.project.pk),
        as_jsonl([log_row(i, model_version=2) for i in range(4)]),
        content_type="application/x-ndjson",
    )
    assert response.json() == {"stored": 4, "already_stored": 0}
    assert set(PredictionLog.objects.values_list("model_version__number", flat=True)) == {2}


def test_it_stores_csv_with_probability_segment_and_feature_columns(team, versions, key_client):
    body = (
        "request_id,timestamp,model_version,predicted,p_great,p_other,latency_ms,"
        "segment_country,review,stars\n"
        'c1,2026-03-01T10:00:00+02:00,1,other,0.3,0.7,8,FR,"Bland, stale",2\n'
        "c2,2026-03-01 09:00:00,2,great,0.95,0.05,,DE,Lovely,\n"
    )
    response = key_client("ingest").post(URL.format(team.project.pk), body, content_type="text/csv")
    assert response.status_code == 200, response.json()
    assert response.json() == {"stored": 2, "already_stored": 0}
    first = PredictionLog.objects.get(request_id="c1")
    assert first.data == {"review": "Bland, stale", "stars": 2}
    assert first.probabilities == {"great": 0.3, "other": 0.7}
    assert first.segment == {"country": "FR"}
    assert first.timestamp.isoformat() == "2026-03-01T08:00:00+00:00"  # offset honoured
    second = PredictionLog.objects.get(request_id="c2")
    assert second.latency_ms is None
    assert second.data == {"review": "Lovely", "stars": None}
    assert second.timestamp.isoformat() == "2026-03-01T09:00:00+00:00"  # no offset: UTC


def test_re_sending_a_batch_changes_nothing(team, versions, key_client):
    client = key_client("ingest")
    rows = [log_row(i) for i in range(5)]
    post_json(client, URL.format(team.project.pk), rows[:3])
    before = list(PredictionLog.objects.order_by("id").values())
    response = post_json(client, URL.format(team.project.pk), rows)
    assert response.json() == {"stored": 2, "already_stored": 3}
    response = post_json(client, URL.format(team.project.pk), rows)
    assert response.json() == {"stored": 0, "already_stored": 5}
    after = list(PredictionLog.objects.order_by("id").values())
    assert after[:3] == before
    assert len(after) == 5


def test_same_request_id_with_other_content_refuses_the_whole_batch(team, versions, key_client):
    client = key_client("ingest")
    post_json(client, URL.format(team.project.pk), [log_row(1)])
    changed = log_row(1, predicted="other", probabilities={"great": 0.4, "other": 0.6})
    response = post_json(client, URL.format(team.project.pk), [log_row(7), changed, log_row(8)])
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] == [
        {
            "row": 2,
            "field": "request_id",
            "value": "req-1",
            "message": "request id req-1 already stored with different content",
        }
    ]
    assert "nothing was stored" in body["message"]
    assert set(PredictionLog.objects.values_list("request_id", flat=True)) == {"req-1"}
    assert PredictionLog.objects.get(request_id="req-1").predicted == "great"


def _refused(team, client, body, content_type="application/json"):
    response = client.post(URL.format(team.project.pk), body, content_type=content_type)
    assert response.status_code in (400, 413, 415), response.status_code
    assert not PredictionLog.objects.exists()
    return response.json()


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"request_id": None}, "request_id", "missing"),
        ({"request_id": ""}, "request_id", "missing"),
        (
            {"predicted": "terrible"},
            "predicted",
            "unknown class “terrible” (classes: great, other)",
        ),
        (
            {"probabilities": {"great": 0.5, "other": 0.2, "meh": 0.3}},
            "probabilities",
            "unknown class “meh”",
        ),
        ({"probabilities": {"great": 0.5, "other": 0.2}}, "probabilities", "sum to 0.7, not 1"),
        ({"probabilities": {"great": 1.0}}, "probabilities", "no probability for class “other”"),
        ({"probabilities": {"great": 1.5, "other": 0.0}}, "probabilities", "is 1.5, outside 0..1"),
        ({"probabilities": [0.8, 0.2]}, "probabilities", "must be an object"),
        ({"model_version": 9}, "model_version", "unknown model version “9” (this project's"),
        ({"timestamp": "yesterday"}, "timestamp", "not an ISO 8601 time"),
        ({"latency_ms": "fast"}, "latency_ms", "not a duration"),
        ({"data": "just text"}, "data", "must be an object"),
        ({"segment": ["DE"]}, "segment", "must be an object"),
        ({"data": {"review": "a\u0000b"}}, "data", "contains a NUL character"),
        ({"request_id": "a\u0000b"}, "request_id", "contains a NUL character"),
        ({"data": {"stars": float("nan")}}, "data", "cannot be stored as JSON"),
        ({"request_id": "x" * 201}, "request_id", "longer than 200 characters"),
    ],
)
def test_a_bad_row_is_named_and_nothing_is_stored(
    team, versions, key_client, change, field, fragment
):
    rows = [log_row(1), log_row(2, **change), log_row(3)]
    body = _refused(team, key_client("ingest"), json.dumps(rows))
    first = body["errors"][0]
    assert (first["row"], first["field"]) == (2, field)
    assert fragment in first["message"]
    assert body["field"] == field
    assert body["error_count"] == 1


def test_many_bad_rows_are_counted_and_the_first_twenty_listed(team, versions, key_client):
    rows = [log_row(i, predicted="nope") for i in range(30)]
    body = _refused(team, key_client("ingest"), json.dumps(rows))
    assert body["error_count"] == 30
    assert [e["row"] for e in body["errors"]] == list(range(1, 21))
    assert body["message"].startswith("30 row errors; nothing was stored. Row 1, predicted")


def test_a_request_id_twice_in_one_batch_is_a_row_error(team, versions, key_client):
    body = _refused(team, key_client("ingest"), json.dumps([log_row(1), log_row(2), log_row(1)]))
    assert body["errors"][0]["row"] == 3
    assert "repeated in this batch (first at row 1)" in body["errors"][0]["message"]


def test_an_unknown_field_is_refused(team, versions, key_client):
    rows = [{**log_row(1), "probs": {}}]
    body = _refused(team, key_client("ingest"), json.dumps(rows))
    assert body["field"] == "probs"
    assert "Unknown field “probs”" in body["message"]


def test_bad_json_is_refused(team, versions, key_client):
    body = _refused(team, key_client("ingest"), '[{"request_id": "a",')
    assert body["field"] == "body"
    assert "not valid JSON" in body["message"]


def test_a_bad_json_line_is_named_by_its_row(team, versions, key_client):
    text = as_jsonl([log_row(1), log_row(2)]) + '{"request_id": "x", oops}\n'
    body = _refused(team, key_client("ingest"), text, "application/x-ndjson")
    assert body["errors"][0]["row"] == 3
    assert "not valid JSON" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("text/csv", b"\x89PNG\r\n\x1a\n\x00\x00",
         "The body is not a text file (CSV, JSON or JSONL): it starts with bytes of a binary "
         "file (a PNG image)."),
        ("application/json", b'[{"request_id": "caf\xe9"}]',
         "The body is not UTF-8 text: byte 0xe9 at line 1, byte offset 20."),
        ("application/x-ndjson", b'{"request_id": "a"}\n{"request_id": "\xe9"}\n',
         "The body is not UTF-8 text: byte 0xe9 at line 2, byte offset 36."),
    ],
)  # fmt: skip
def test_a_body_that_is_not_utf8_text_is_refused_saying_so(
    team, versions, key_client, content_type, body, message
):
    refused = _refused(team, key_client("ingest"), body, content_type)
    assert refused["field"] == "body"
    assert refused["message"].startswith(message), refused["message"]


def test_a_csv_without_a_class_probability_column_is_refused(team, versions, key_client):
    text = (
        "request_id,timestamp,model_version,predicted,p_great\nx,2026-03-01T00:00:00Z,1,great,1\n"
    )
    body = _refused(team, key_client("ingest"), text, "text/csv")
    assert body["field"] == "p_other"


def test_a_csv_probability_column_of_no_class_is_refused(team, versions, key_client):
    text = (
        "request_id,timestamp,model_version,predicted,p_great,p_other,p_meh\n"
        "x,2026-03-01T00:00:00Z,1,great,0.5,0.5,0\n"
    )
    body = _refused(team, key_client("ingest"), text, "text/csv")
    assert body["field"] == "p_meh"


def test_more_rows_than_the_limit_are_refused_naming_it(team, versions, key_client):
    text = "[" + ",".join(["{}"] * (MAX_ROWS + 1)) + "]"
    response = key_client("ingest").post(
        URL.format(team.project.pk), text, content_type="application/json"
    )
    assert response.status_code == 413
    assert "the limit is 100,000 rows per request" in response.json()["message"]
    assert not PredictionLog.objects.exists()


def test_more_json_lines_than_the_limit_are_refused(team, versions, key_client):
    text = "{}\n" * (MAX_ROWS + 1)
    response = key_client("ingest").post(
        URL.format(team.project.pk), text, content_type="application/x-ndjson"
    )
    assert response.status_code == 413
    assert "100,001 rows" in response.json()["message"]


def test_an_unsupported_content_type_is_refused(team, versions, key_client):
    body = _refused(team, key_client("ingest"), "a=b", "text/plain")
    assert "Unsupported Content-Type “text/plain”" in body["message"]


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("owner", 200),
        ("data_scientist", 200),
        ("product_manager", 403),
        ("expert", 403),
        ("outsider", 404),
    ],
)
def test_members_who_train_models_may_ingest_with_their_login(team, versions, who, status):
    user = team.outsider if who == "outsider" else team.users[who]
    response = post_json(team.client(user), URL.format(team.project.pk), [log_row(1)])
    assert response.status_code == status
    assert PredictionLog.objects.exists() == (status == 200)


def test_anonymous_callers_are_refused(team, versions):
    response = post_json(Client(), URL.format(team.project.pk), [log_row(1)])
    assert response.status_code in (401, 403)
    assert not PredictionLog.objects.exists()


def test_errors_in_several_slices_are_listed_together_and_nothing_is_stored(
    team, versions, key_client, monkeypatch
):
    """PostgreSQL checks and COPYs a batch slice by slice; an error in a late
    slice still undoes the early ones, and every slice's errors are listed."""
    from monitoring.services import predictions

    monkeypatch.setattr(predictions, "PIPELINE_ROWS", 2)
    rows = [log_row(i) for i in range(9)]
    rows[4]["predicted"] = "nope"
    rows[7]["model_version"] = 5
    body = _refused(team, key_client("ingest"), json.dumps(rows))
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (5, "predicted"),
        (8, "model_version"),
    ]
    assert body["error_count"] == 2


def test_a_request_id_repeated_across_slices_is_a_row_error(
    team, versions, key_client, monkeypatch
):
    from monitoring.services import predictions

    monkeypatch.setattr(predictions, "PIPELINE_ROWS", 2)
    rows = [log_row(i) for i in range(5)] + [log_row(1)]
    body = _refused(team, key_client("ingest"), json.dumps(rows))
    assert body["errors"][0]["row"] == 6
    assert "repeated in this batch (first at row 2)" in body["errors"][0]["message"]


def test_a_batch_partly_stored_stores_the_rest(team, versions, key_client, monkeypatch):
    """A re-sent batch with new rows among stored ones (PostgreSQL: the
    straight COPY meets a stored id and the comparing path takes over)."""
    from monitoring.services import predictions

    monkeypatch.setattr(predictions, "PIPELINE_ROWS", 2)
    client = key_client("ingest")
    post_json(client, URL.format(team.project.pk), [log_row(3)])
    response = post_json(client, URL.format(team.project.pk), [log_row(i) for i in range(5)])
    assert response.json() == {"stored": 4, "already_stored": 1}
    assert PredictionLog.objects.count() == 5


def test_a_re_sent_batch_goes_straight_to_the_comparing_path(
    team, versions, key_client, monkeypatch
):
    from django.db import connection

    from monitoring.services import predictions

    client = key_client("ingest")
    rows = [log_row(i) for i in range(4)]
    post_json(client, URL.format(team.project.pk), rows[:2])
    tried = []
    copy_new = predictions._copy_new
    monkeypatch.setattr(predictions, "_copy_new", lambda *a: tried.append(1) or copy_new(*a))
    response = post_json(client, URL.format(team.project.pk), rows)
    assert response.json() == {"stored": 2, "already_stored": 2}
    assert tried == []  # its first row is stored: no straight COPY first
    fresh = post_json(client, URL.format(team.project.pk), [log_row(9), log_row(0)])
    assert fresh.json() == {"stored": 1, "already_stored": 1}
    assert tried == ([1] if connection.vendor == "postgresql" else [])
    assert PredictionLog.objects.count() == 5
    # Whole-number request ids are stored as their digits, and a retry of them is seen as one.
    numbered = [log_row(i, request_id=700 + i) for i in range(2)]
    post_json(client, URL.format(team.project.pk), numbered)
    tried.clear()
    again = post_json(client, URL.format(team.project.pk), numbered)
    assert again.json() == {"stored": 0, "already_stored": 2}
    assert tried == []
    assert PredictionLog.objects.filter(request_id="700").exists()


@pytest.mark.parametrize(
    "data",
    [
        # orjson reads these bodies (the fast path) ...
        {"review": 'Ünïcode ✓ "quoted" \\ back', "stars": 4, "tags": ["a", None, True]},
        # ... a 25-digit integer sends the body to the json module, which keeps it exact.
        {"review": "big", "order": 1234567890123456789012345},
    ],
)
def test_data_is_stored_exactly_as_sent(team, versions, key_client, data):
    response = post_json(
        key_client("ingest"), URL.format(team.project.pk), [log_row(1, data=data), log_row(2)]
    )
    assert response.json() == {"stored": 2, "already_stored": 0}
    assert PredictionLog.objects.get(request_id="req-1").data == data


def test_infinity_in_data_is_a_row_error_not_null(team, versions, key_client):
    # 1e400 reads as infinity in Python's json module; orjson refuses the body,
    # and the json module's reading then names the row.
    rows = json.dumps([log_row(1, data={"stars": "INF"}), log_row(2)]).replace('"INF"', "1e400")
    body = _refused(team, key_client("ingest"), rows)
    assert (body["errors"][0]["row"], body["field"]) == (1, "data")
    assert "cannot be stored as JSON" in body["errors"][0]["message"]
    assert not PredictionLog.objects.exists()


@pytest.mark.parametrize("good", [True, False], ids=["stored", "refused"])
def test_the_garbage_collector_is_paused_for_a_batch_and_back_on_after(
    team, versions, key_client, monkeypatch, good
):
    import gc

    from monitoring.services import predictions

    seen = []
    ingest = predictions.prediction_logs_ingest

    def watched(**kwargs):
        seen.append(gc.isenabled())
        return ingest(**kwargs)

    monkeypatch.setattr("monitoring.api.prediction_logs_ingest", watched)
    assert gc.isenabled()
    rows = [log_row(1), log_row(2) if good else log_row(2, predicted="nonsense")]
    response = post_json(key_client("ingest"), URL.format(team.project.pk), rows)
    assert response.status_code == (200 if good else 400)
    assert seen == [False]  # off while the batch was read and stored
    assert gc.isenabled()  # and on again, whatever the answer

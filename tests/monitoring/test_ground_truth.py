"""Feedback and outcomes: kept with their source, joined to logs by request id."""

import pytest

from monitoring.models import GroundTruth, PredictionLog
from monitoring.selectors import ground_truth_latest, prediction_logs_with_truth
from monitoring.services.ground_truth import ground_truth_record_expert

from .conftest import URL, log_row, post_json

pytestmark = pytest.mark.django_db


def feedback_url(team):
    return f"/api/v1/projects/{team.project.pk}/feedback/"


def outcomes_url(team):
    return f"/api/v1/projects/{team.project.pk}/outcomes/"


def test_feedback_for_an_unknown_request_is_kept_and_joins_its_log_later(
    team, versions, key_client
):
    client = key_client("ingest", "feedback")
    response = client.post(
        feedback_url(team),
        {"request_id": "req-5", "label": "other", "kind": "correct"},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert not PredictionLog.objects.exists()
    row = GroundTruth.objects.get()
    assert (row.source, row.kind, row.api_key.name) == ("feedback", "correct", "product")
    assert post_json(client, URL.format(team.project.pk), [log_row(5)]).status_code == 200
    (log,) = prediction_logs_with_truth(project=team.project, request_ids=["req-5"])
    assert (log.predicted, log.truth.label, log.truth.kind) == ("great", "other", "correct")


def test_the_same_feedback_twice_is_stored_once(team, key_client):
    client = key_client("feedback")
    body = {"request_id": "r", "label": "great", "kind": "confirm"}
    assert client.post(feedback_url(team), body, content_type="application/json").status_code == 201
    again = client.post(feedback_url(team), body, content_type="application/json")
    assert again.status_code == 200 and again.json()["created"] is False
    assert GroundTruth.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "r", "label": "meh", "kind": "confirm"}, "label"),
        ({"request_id": "r", "label": "great", "kind": "maybe"}, "kind"),
        ({"label": "great", "kind": "confirm"}, "request_id"),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(team, key_client, body, field):
    response = key_client("feedback").post(
        feedback_url(team), body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not GroundTruth.objects.exists()


def test_experts_may_not_send_feedback_with_their_login(team):
    response = team.client("expert").post(
        feedback_url(team),
        {"request_id": "r", "label": "great", "kind": "confirm"},
        content_type="application/json",
    )
    assert response.status_code == 403


def test_outcomes_in_csv_are_stored_and_a_resend_changes_nothing(team, key_client):
    client = key_client("ingest")
    body = "request_id,label\na,great\nb,other\n"
    response = client.post(outcomes_url(team), body, content_type="text/csv")
    assert response.json() == {"stored": 2, "already_stored": 0}
    response = client.post(outcomes_url(team), body, content_type="text/csv")
    assert response.json() == {"stored": 0, "already_stored": 2}
    changed = client.post(
        outcomes_url(team), "request_id,label\na,other\n", content_type="text/csv"
    )
    assert changed.json() == {"stored": 1, "already_stored": 0}
    latest = ground_truth_latest(project=team.project, request_ids=["a", "b"])
    assert {k: v.label for k, v in latest.items()} == {"a": "other", "b": "other"}
    assert set(GroundTruth.objects.values_list("source", flat=True)) == {"outcome"}


def test_outcomes_in_json_lines(team, key_client):
    body = '{"request_id": "a", "label": "great"}\n{"request_id": 7, "label": "other"}\n'
    response = key_client("ingest").post(
        outcomes_url(team), body, content_type="application/x-ndjson"
    )
    assert response.json() == {"stored": 2, "already_stored": 0}
    assert GroundTruth.objects.filter(request_id="7").exists()


def test_outcomes_with_a_bad_row_store_nothing(team, key_client):
    body = [{"request_id": "a", "label": "great"}, {"request_id": "b", "label": "meh"}]
    response = post_json(key_client("ingest"), outcomes_url(team), body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["row"] == 2
    assert response.json()["errors"][0]["field"] == "label"
    assert not GroundTruth.objects.exists()


def test_an_outcome_outranks_newer_feedback_and_an_expert_outranks_feedback(team, key_client):
    post_json(key_client("ingest"), outcomes_url(team), [{"request_id": "a", "label": "great"}])
    client = key_client("feedback")
    for request_id in ("a", "b"):
        client.post(
            feedback_url(team),
            {"request_id": request_id, "label": "other", "kind": "correct"},
            content_type="application/json",
        )
    ground_truth_record_expert(
        project=team.project, request_id="b", label="great", by=team.users["expert"]
    )
    client.post(
        feedback_url(team),
        {"request_id": "b", "label": "other", "kind": "confirm"},
        content_type="application/json",
    )
    latest = ground_truth_latest(project=team.project, request_ids=["a", "b"])
    assert (latest["a"].source, latest["a"].label) == ("outcome", "great")
    assert (latest["b"].source, latest["b"].label) == ("expert", "great")
    assert GroundTruth.objects.count() == 5  # append-only: every row kept

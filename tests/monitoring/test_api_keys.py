"""API keys: created once, scoped to one project and to scopes, revocable, throttled."""

import hashlib

import pytest
from django.conf import settings
from django.test import Client, override_settings

from leanml_site.models import AuditEvent
from monitoring.models import ApiKey, GroundTruth, PredictionLog
from monitoring.services.api_keys import api_key_create

from .conftest import URL, log_row, post_json

pytestmark = pytest.mark.django_db
KEYS = "/api/v1/projects/{}/api-keys/"


def test_an_owner_creates_a_key_whose_secret_is_shown_once(team):
    client = team.client("owner")
    response = client.post(
        KEYS.format(team.project.pk),
        {"name": "checkout", "scopes": ["ingest"]},
        content_type="application/json",
    )
    assert response.status_code == 201
    full = response.json()["key"]
    prefix, secret = full.split(".", 1)
    key = ApiKey.objects.get()
    assert (key.prefix, key.scopes, key.created_by) == (prefix, ["ingest"], team.users["owner"])
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiKey.objects.values().get())
    listed = client.get(KEYS.format(team.project.pk)).json()
    assert [k["prefix"] for k in listed] == [prefix]
    assert "key" not in listed[0] and secret not in str(listed)
    assert AuditEvent.objects.filter(action="api_key.create", project=team.project).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "x", "scopes": []}, "scopes"), ({"name": "x", "scopes": ["admin"]}, "scopes")],
)
def test_a_key_needs_known_scopes(team, body, field):
    response = team.client("owner").post(
        KEYS.format(team.project.pk), body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"].startswith(field)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(("who", "status"), [("expert", 403), ("product_manager", 403)])
def test_only_members_who_train_models_manage_keys(team, who, status):
    client = team.client(who)
    assert client.get(KEYS.format(team.project.pk)).status_code == status
    response = client.post(
        KEYS.format(team.project.pk),
        {"name": "x", "scopes": ["ingest"]},
        content_type="application/json",
    )
    assert response.status_code == status
    assert not ApiKey.objects.exists()


def test_a_key_cannot_manage_keys(team, key_client):
    response = key_client("ingest", "feedback").get(KEYS.format(team.project.pk))
    assert response.status_code in (401, 403)


def test_a_key_of_project_a_cannot_touch_project_b(team, versions, key_client):
    client = key_client("ingest", "feedback")
    other = team.other_project.pk
    assert post_json(client, URL.format(other), [log_row(1)]).status_code == 404
    response = client.post(
        f"/api/v1/projects/{other}/feedback/",
        {"request_id": "a", "label": "great", "kind": "confirm"},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert not PredictionLog.objects.exists() and not GroundTruth.objects.exists()


def test_a_key_without_the_scope_is_refused(team, versions, key_client):
    response = post_json(key_client("feedback"), URL.format(team.project.pk), [log_row(1)])
    assert response.status_code == 403
    assert "“ingest” scope" in response.json()["message"]
    response = key_client("ingest").post(
        f"/api/v1/projects/{team.project.pk}/feedback/",
        {"request_id": "a", "label": "great", "kind": "confirm"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not PredictionLog.objects.exists() and not GroundTruth.objects.exists()


def test_a_revoked_key_is_refused_at_once(team, versions):
    key, full = api_key_create(
        project=team.project, by=team.users["owner"], name="old", scopes=["ingest"]
    )
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {full}")
    assert post_json(client, URL.format(team.project.pk), [log_row(1)]).status_code == 200
    response = team.client("data_scientist").post(f"{KEYS.format(team.project.pk)}{key.pk}/revoke/")
    assert response.status_code == 200
    assert response.json()["active"] is False
    response = post_json(client, URL.format(team.project.pk), [log_row(2)])
    assert response.status_code == 401
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-1"]
    assert AuditEvent.objects.filter(action="api_key.revoke").count() == 1


@pytest.mark.parametrize(
    "header",
    ["Api-Key nonsense", "Api-Key abc.def", "Api-Key {prefix}.wrong-secret", "Api-Key {prefix}."],
)
def test_a_wrong_key_is_refused(team, versions, header):
    key, _full = api_key_create(
        project=team.project, by=team.users["owner"], name="k", scopes=["ingest"]
    )
    client = Client(HTTP_AUTHORIZATION=header.format(prefix=key.prefix))
    response = post_json(client, URL.format(team.project.pk), [log_row(1)])
    assert response.status_code == 401
    assert not PredictionLog.objects.exists()


def test_a_used_key_records_when(team, versions, key_client):
    post_json(key_client("ingest"), URL.format(team.project.pk), [log_row(1)])
    assert ApiKey.objects.get().last_used_at is not None


def test_each_key_is_rate_limited(team, versions):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_key": "2/minute"}
    _k1, first = api_key_create(project=team.project, by=None, name="a", scopes=["ingest"])
    _k2, second = api_key_create(project=team.project, by=None, name="b", scopes=["ingest"])
    url = URL.format(team.project.pk)
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        client = Client(HTTP_AUTHORIZATION=f"Api-Key {first}")
        assert post_json(client, url, [log_row(1)]).status_code == 200
        assert post_json(client, url, [log_row(2)]).status_code == 200
        throttled = post_json(client, url, [log_row(3)])
        assert throttled.status_code == 429
        assert "Retry-After" in throttled
        # Another key has its own allowance.
        other = Client(HTTP_AUTHORIZATION=f"Api-Key {second}")
        assert post_json(other, url, [log_row(4)]).status_code == 200
    assert sorted(PredictionLog.objects.values_list("request_id", flat=True)) == [
        "req-1",
        "req-2",
        "req-4",
    ]


# --- The page ---------------------------------------------------------------------


def test_the_page_creates_a_key_and_shows_it_once(team):
    client = team.client("data_scientist")
    url = f"/projects/{team.project.pk}/api-keys/"
    response = client.post(url, {"name": "feedback <widget>", "scopes": ["feedback"]})
    assert response.status_code == 200
    full = response.context["created"]["full"]
    assert full.encode() in response.content
    assert b"feedback &lt;widget&gt;" in response.content  # escaped
    again = client.get(url)
    assert full.split(".")[1].encode() not in again.content
    assert ApiKey.objects.get().scopes == ["feedback"]


def test_the_page_revokes_a_key(team):
    key, _ = api_key_create(project=team.project, by=None, name="k", scopes=["ingest"])
    client = team.client("owner")
    response = client.post(f"/projects/{team.project.pk}/api-keys/{key.pk}/revoke/")
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None and key.revoked_by == team.users["owner"]


@pytest.mark.parametrize(("who", "status"), [("expert", 403), ("product_manager", 403)])
def test_the_page_is_for_members_who_train_models(team, who, status):
    key, _ = api_key_create(project=team.project, by=None, name="k", scopes=["ingest"])
    client = team.client(who)
    assert client.get(f"/projects/{team.project.pk}/api-keys/").status_code == status
    url = f"/projects/{team.project.pk}/api-keys/{key.pk}/revoke/"
    assert client.post(url).status_code == status
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_page_hides_other_projects_keys(team):
    key, _ = api_key_create(project=team.other_project, by=None, name="k", scopes=["ingest"])
    client = team.client("owner")
    assert client.post(f"/projects/{team.project.pk}/api-keys/{key.pk}/revoke/").status_code == 404
    assert client.get(f"/projects/{team.other_project.pk}/api-keys/").status_code == 404

import pytest
from django.test import Client


@pytest.mark.django_db
def test_healthz_answers_without_login():
    response = Client().get("/healthz/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_rejects_post():
    assert Client().post("/healthz/").status_code == 405

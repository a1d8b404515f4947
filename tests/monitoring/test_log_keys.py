"""The prediction log's project and model version without database
constraints (see ``PredictionLog``): deleting still keeps them consistent."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError

from monitoring.models import PredictionLog

from .conftest import URL, log_row, post_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged(team, versions, key_client):
    response = post_json(key_client("ingest"), URL.format(team.project.pk), [log_row(1)])
    assert response.json() == {"stored": 1, "already_stored": 0}
    return PredictionLog.objects.get()


def test_a_version_with_logs_cannot_be_deleted(logged, versions):
    with pytest.raises(ProtectedError):
        versions[0].delete()
    assert PredictionLog.objects.filter(model_version=versions[0]).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL triggers")
@pytest.mark.parametrize("table", ["iterations_modelversion", "labelling_project"])
def test_the_database_refuses_to_orphan_logs(logged, table):
    """What a batch committed between Django's checks and its DELETE meets:
    the trigger, reading with a snapshot taken after the batch's COMMIT."""
    pk = logged.model_version_id if table == "iterations_modelversion" else logged.project_id
    with (
        pytest.raises(IntegrityError, match="still has prediction logs"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pk])  # noqa: S608
    assert PredictionLog.objects.filter(pk=logged.pk).exists()


def test_an_unknown_version_is_still_refused_by_the_batch_check(team, versions, key_client):
    response = post_json(
        key_client("ingest"), URL.format(team.project.pk), [log_row(1, model_version=99)]
    )
    assert response.status_code == 400
    assert response.json()["field"] == "model_version"
    assert not PredictionLog.objects.exists()

import json

import pytest
from django.test import Client

from iterations.models import DatasetSnapshot, EnsembleConfig, ModelVersion
from monitoring.services.api_keys import api_key_create

URL = "/api/v1/projects/{}/predictions/"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts(settings, request):
    # Throttle histories live in the cache. Each test gets a cache of its own
    # in memory: clearing the shared Redis cache would reach other test
    # processes (and, before the cache had its own database, the broker's
    # queued tasks).
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"monitoring-{request.node.nodeid}",
        }
    }


@pytest.fixture
def versions(team):
    """Versions 1 and 2 of the team's project (what the product may run)."""
    snapshot = DatasetSnapshot.objects.create(
        project=team.project, content_hash="a" * 64, row_count=0
    )
    ensemble = EnsembleConfig.objects.create(project=team.project, number=1, submodels=[])
    return [
        ModelVersion.objects.create(
            project=team.project, number=n, snapshot=snapshot, ensemble=ensemble
        )
        for n in (1, 2)
    ]


def log_row(i, **changes):
    row = {
        "request_id": f"req-{i}",
        "timestamp": f"2026-03-01T12:{i % 60:02d}:00Z",
        "model_version": 1,
        "data": {"review": f"Tasty snack number {i}", "product": "B00X"},
        "predicted": "great",
        "probabilities": {"great": 0.8, "other": 0.2},
        "latency_ms": 12.5,
        "segment": {"country": "DE"},
    }
    row.update(changes)
    return row


def as_jsonl(rows):
    return "\n".join(json.dumps(r) for r in rows) + "\n"


@pytest.fixture
def key_client(team):
    """A client of the team's project with an API key of the given scopes."""

    def make(*scopes, project=None):
        _key, full = api_key_create(
            project=project or team.project,
            by=team.users["owner"],
            name="product",
            scopes=list(scopes or ["ingest", "feedback"]),
        )
        return Client(HTTP_AUTHORIZATION=f"Api-Key {full}")

    return make


def post_json(client, url, rows):
    return client.post(url, json.dumps(rows), content_type="application/json")

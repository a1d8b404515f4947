"""Synthetic production logs for drift tests: a project with a number, a
category and a text field, a version trained on 400 rows, and a window of
logs drawn like the training rows (``shifted=False``) or moved on every field."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from iterations.models import DatasetSnapshot, EnsembleConfig, ModelVersion, SnapshotRow
from labelling.models import Sample
from ml.hashing import content_hash
from monitoring.models import GroundTruth, PredictionLog

FIELDS = [
    {"name": "review", "kind": "text", "shown": True},
    {"name": "amount", "kind": "number", "shown": True},
    {"name": "channel", "kind": "category", "shown": True},
]
OLD_WORDS = [
    "tasty",
    "crunchy",
    "sweet",
    "fresh",
    "snack",
    "bag",
    "flavour",
    "salty",
    "price",
    "box",
]
NEW_WORDS = [
    "battery",
    "charger",
    "cable",
    "screen",
    "warranty",
    "broken",
    "refund",
    "shipping",
    "laptop",
    "port",
]
WINDOW_START = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(days=1)


def _row(rng, shifted):
    words = NEW_WORDS if shifted else OLD_WORDS
    return {
        "review": " ".join(rng.choice(words, size=8)),
        "amount": float(rng.normal(80 if shifted else 50, 10)),
        "channel": str(
            rng.choice(["web", "app", "store", "phone"], p=[0.1, 0.1, 0.1, 0.7])
            if shifted
            else rng.choice(["web", "app", "store"], p=[0.5, 0.3, 0.2])
        ),
    }


@pytest.fixture
def drift_project(team):
    """The team's project with the three fields and a production version 1."""
    project = team.project
    project.fields = FIELDS
    project.save(update_fields=["fields"])
    great, other = team.classes
    rng = np.random.default_rng(1)
    samples = []
    for i in range(400):
        data = _row(rng, shifted=False)
        samples.append(
            Sample(
                project=project,
                external_id=f"t{i}",
                data=data,
                content_hash=content_hash(data),
                split="train",
            )
        )
    samples = Sample.objects.bulk_create(samples)
    snapshot = DatasetSnapshot.objects.create(project=project, content_hash="d" * 64, row_count=400)
    SnapshotRow.objects.bulk_create(
        SnapshotRow(
            snapshot=snapshot,
            sample=s,
            revision=0,
            label=great if i % 5 < 3 else other,  # 60% great
            split="train",
        )
        for i, s in enumerate(samples)
    )
    ensemble = EnsembleConfig.objects.create(project=project, number=1, submodels=[])
    version = ModelVersion.objects.create(
        project=project,
        number=1,
        snapshot=snapshot,
        ensemble=ensemble,
        status=ModelVersion.Status.PRODUCTION,
    )
    return project, version


def add_logs(project, version, *, shifted, n=400, seed=2, start=WINDOW_START, truth=0, prefix=""):
    """``n`` logs spread over the day from ``start``; the first ``truth`` get an outcome."""
    rng = np.random.default_rng(seed)
    great_share = 0.2 if shifted else 0.6
    logs = []
    for i in range(n):
        predicted = "great" if rng.random() < great_share else "other"
        p = 0.8
        logs.append(
            PredictionLog(
                project=project,
                request_id=f"{prefix}{'s' if shifted else 'u'}{seed}-{i}",
                timestamp=start + timedelta(seconds=i * 86_000 // n),
                model_version=version,
                data=_row(rng, shifted),
                predicted=predicted,
                probabilities={predicted: p, ("other" if predicted == "great" else "great"): 1 - p},
                confidence=p,
                received_at=start,
            )
        )
    logs = PredictionLog.objects.bulk_create(logs)
    GroundTruth.objects.bulk_create(
        GroundTruth(
            project=project,
            request_id=log.request_id,
            label=log.predicted,
            source=GroundTruth.Source.OUTCOME,
            created_at=start,
        )
        for log in logs[:truth]
    )
    return logs

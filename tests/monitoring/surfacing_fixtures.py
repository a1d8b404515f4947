"""A production model on real reviews and its logged predictions, for the
surfacing tests: v1 trained by the real training path and promoted, and
reviews it never saw logged as its production predictions yesterday."""

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from iterations.models import ModelVersion
from iterations.services.artifacts import ensemble_load
from iterations.services.training import training_request, training_run
from monitoring.models import GroundTruth, PredictionLog
from tests.iterations.conftest import crew, media, review_rows, reviews  # noqa: F401 (fixtures)


@dataclass
class Production:
    crew: object
    project: object
    version: object
    logs: list


def log_predictions(project, version, rows, *, start=0, when=None):
    """Score ``rows`` (external id, data, label) with the version's ensemble
    and store them as its production logs, request ids ``q<n>``."""
    import pandas as pd

    ensemble = ensemble_load(version)
    frame = pd.DataFrame.from_records([data for _, data, _ in rows])
    proba = ensemble.predict_proba(frame)
    classes = list(ensemble.classes_)
    when = when or timezone.now() - timedelta(days=1)
    logs = [
        PredictionLog(
            project=project,
            request_id=f"q{start + i}",
            timestamp=when,
            model_version=version,
            data=data,
            predicted=classes[p.argmax()],
            probabilities={c: float(x) for c, x in zip(classes, p, strict=True)},
            confidence=float(p.max()),
            received_at=when,
        )
        for i, ((_, data, _), p) in enumerate(zip(rows, proba, strict=True))
    ]
    return PredictionLog.objects.bulk_create(logs)


def correct(project, log, label, *, kind=GroundTruth.Kind.CORRECT, after=0):
    return GroundTruth.objects.create(
        project=project,
        request_id=log.request_id,
        label=label,
        source=GroundTruth.Source.FEEDBACK,
        kind=kind,
        created_at=timezone.now() + timedelta(seconds=after),
    )


@pytest.fixture
def production(crew, media):  # noqa: F811 (pytest fixture names)
    job = training_request(project=crew.project, by=crew.user, queue=False)
    job = training_run(job_id=job.pk)
    assert job.state == "succeeded", job.error
    ModelVersion.objects.filter(pk=job.version_id).update(status="production")
    version = ModelVersion.objects.get(pk=job.version_id)
    unseen = review_rows(500)[200:]
    logs = log_predictions(crew.project, version, unseen)
    return Production(crew, crew.project, version, logs)

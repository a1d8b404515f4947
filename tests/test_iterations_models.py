"""The write-once rules of the iteration evidence, enforced on the model."""

import pytest
from django.db import IntegrityError

from iterations.models import DatasetSnapshot, EnsembleConfig, ModelVersion, RegressionReport

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(team):
    snapshot = DatasetSnapshot.objects.create(
        project=team.project, content_hash="a" * 64, row_count=0
    )
    ensemble = EnsembleConfig.objects.create(project=team.project, number=1, submodels=[])
    return ModelVersion.objects.create(
        project=team.project, number=1, snapshot=snapshot, ensemble=ensemble
    )


def test_a_report_cannot_be_edited(team, version):
    report = RegressionReport.objects.create(
        project=team.project,
        candidate=version,
        holdout_hash="h",
        payload={},
        passed=True,
        content_hash="c" * 64,
    )
    report.passed = False
    with pytest.raises(ValueError, match="immutable"):
        report.save()


def test_only_one_version_is_in_production(team, version):
    version.status = "production"
    version.save()
    second = ModelVersion.objects.create(
        project=team.project, number=2, snapshot=version.snapshot, ensemble=version.ensemble
    )
    second.status = "production"
    with pytest.raises(IntegrityError):
        second.save()

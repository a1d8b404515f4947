import hashlib
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from django.conf import settings

from iterations.models import Artifact, ModelVersion
from iterations.services.artifacts import (
    ArtifactError,
    artifact_load,
    artifact_write,
    combiner_state,
    trusted_types,
)
from iterations.services.snapshots import snapshot_create
from ml.ensemble import Ensemble
from ml.submodels import create


@pytest.fixture
def version(reviews, media):
    snapshot = snapshot_create(project=reviews.project, by=reviews.user)
    return ModelVersion.objects.create(
        project=reviews.project, number=1, snapshot=snapshot, ensemble=reviews.config
    )


def fitted_ensemble(combiner):
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame(
        {
            "review": [("tasty great " if i % 2 else "stale bad ") + str(i) for i in range(n)],
            "product": ["tea", "coffee", None, "snack"] * (n // 4),
            "price": rng.normal(size=n),
        },
        index=[f"s{i}" for i in range(n)],
    )
    labels = np.array(["great" if i % 2 else "other" for i in range(n)], dtype=object)
    models = [
        create("tfidf_logreg", fields=["review"], key="text"),
        create("hist_gbm", fields=["product", "price"], params={"min_samples_leaf": 5}),
        create(
            "keyword_rules",
            fields=["review"],
            params={"rules": [{"pattern": "tasty", "class": "great"}]},
        ),
    ]
    return Ensemble(models, combiner=combiner).fit(frame, labels, seed=0), frame


@pytest.mark.parametrize("combiner", ["stacking", "voting"])
def test_the_trusted_list_covers_every_built_in_sub_model_and_the_combiner(combiner):
    ensemble, _ = fitted_ensemble(combiner)
    needed = set()
    for obj in [*ensemble.submodels, combiner_state(ensemble)]:
        needed |= set(sio.get_untrusted_types(data=sio.dumps(obj)))
    assert needed <= set(trusted_types())


def test_it_writes_hashes_and_loads_a_sub_model(version, media):
    ensemble, frame = fitted_ensemble("stacking")
    model = ensemble.submodel("text")

    artifact = artifact_write(version=version, key="text", obj=model, fit_seconds=1.5)

    path = media / artifact.file.name
    data = path.read_bytes()
    artifact.refresh_from_db()
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert artifact.size_bytes == len(data)
    assert artifact.fit_seconds == 1.5
    assert [p.name for p in path.parent.iterdir()] == ["text.skops"]  # no temp file left
    loaded = artifact_load(artifact)
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test_a_failed_write_leaves_no_file_and_no_row(version, media):
    ensemble, _ = fitted_ensemble("voting")
    with (
        mock.patch("os.replace", side_effect=OSError("disk full")),
        pytest.raises(OSError, match="disk full"),
    ):
        artifact_write(version=version, key="text", obj=ensemble.submodel("text"))
    assert not Artifact.objects.exists()
    assert [p for p in media.rglob("*") if p.is_file()] == []


def test_it_refuses_an_altered_file(version, media):
    ensemble, _ = fitted_ensemble("voting")
    artifact = artifact_write(version=version, key="text", obj=ensemble.submodel("text"))
    path = Path(settings.MEDIA_ROOT) / artifact.file.name
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="was altered"):
        artifact_load(artifact)


def test_it_refuses_untrusted_types(version, media):
    from sklearn.preprocessing import FunctionTransformer

    # A transformer holding an arbitrary function (here: delete a file) is
    # exactly what a tampered artifact would carry; our list must not admit it.
    obj = FunctionTransformer(func=Path.unlink)
    artifact = artifact_write(version=version, key="evil", obj=obj)
    assert set(sio.get_untrusted_types(data=(media / artifact.file.name).read_bytes())) - set(
        trusted_types()
    )
    with pytest.raises(ArtifactError, match="not trusted"):
        artifact_load(artifact)

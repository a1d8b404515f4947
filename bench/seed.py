"""Seed a benchmark project quickly: samples (real reviews), queue items,
annotator accounts with API tokens. Run inside a configured Django process."""

import numpy as np


def seed_project(
    *, n_samples, n_annotators, overlap=1, queued=None, labelled=0, seed=0, batch=20_000
):
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from bench.common import reviews_frame
    from labelling.models import Annotation, Membership, QueueItem, Sample
    from labelling.services.projects import project_create
    from leanml_site.roles import Role
    from ml.hashing import content_hash, split_for

    User = get_user_model()
    owner, _ = User.objects.get_or_create(username="bench-owner")
    project = project_create(
        by=owner,
        name=f"bench {n_samples}",
        label_classes=["great", "other"],
        fields=[
            {"name": "review", "kind": "text", "shown": True},
            {"name": "product", "kind": "category", "shown": True},
        ],
        overlap=overlap,
    )
    great, other = list(project.label_classes.order_by("order"))
    frame = reviews_frame()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(frame), size=n_samples)
    reviews, products = frame["review"].to_numpy(), frame["product"].to_numpy()
    scores = frame["score"].to_numpy()
    queued = n_samples - labelled if queued is None else queued
    annotators = []
    for i in range(n_annotators):
        user, _ = User.objects.get_or_create(username=f"bench-annotator-{i}")
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.EXPERT})
        annotators.append((user, Token.objects.get_or_create(user=user)[0].key))
    for start in range(0, n_samples, batch):
        with transaction.atomic():
            rows = []
            for offset, i in enumerate(picks[start : start + batch]):
                number = start + offset
                data = {"review": reviews[i], "product": products[i]}
                label = (great if scores[i] == "great" else other) if number < labelled else None
                rows.append(
                    Sample(
                        project=project,
                        external_id=f"r{number}",
                        data=data,
                        content_hash=content_hash(data),
                        split=split_for(f"r{number}", 0.2),
                        consensus_state="agreed" if label else "none",
                        consensus_label=label,
                    )
                )
            created = Sample.objects.bulk_create(rows, batch_size=5000)
            if labelled > start:
                Annotation.objects.bulk_create(
                    [
                        Annotation(
                            project=project,
                            sample=s,
                            annotator=owner,
                            label=s.consensus_label,
                            origin="import",
                            seconds=3.0,
                        )
                        for s in created
                        if s.consensus_label_id
                    ],
                    batch_size=5000,
                )
            QueueItem.objects.bulk_create(
                [
                    QueueItem(project=project, sample=s, priority=0, reason="Imported")
                    for s in created
                    if s.consensus_label_id is None
                ][: max(0, queued)],
                batch_size=5000,
            )
    return project, annotators

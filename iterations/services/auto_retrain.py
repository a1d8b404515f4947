"""The project rule "retrain automatically every N new consensus labels".

Checked by a beat task every few minutes. A "new label" is a usable
labelled sample (the selection a snapshot freezes) beyond the number the
latest model version's snapshot holds, so the count and the training data
always agree. The latest version counts whatever its status: a retrain that
failed (say, a class with too few labels) is not retried every few minutes,
only once N more labels have come in.
"""

import logging

from django.db import transaction

from labelling.models import Project
from leanml_site.audit import audit_record

from ..models import ModelSettings, TrainingJob
from .snapshots import usable_samples
from .training import TrainingError, training_request

logger = logging.getLogger(__name__)

ACTIVE = (TrainingJob.State.QUEUED, TrainingJob.State.RUNNING)


def auto_retrain_check() -> list[TrainingJob]:
    """Every project with ``retrain_every`` set: request a retrain where due.
    One project's failure is logged and does not stop the others."""
    jobs = []
    rules = ModelSettings.objects.filter(retrain_every__isnull=False).values_list(
        "project_id", flat=True
    )
    for project in Project.objects.filter(pk__in=list(rules)).order_by("pk"):
        try:
            job = auto_retrain_project(project=project)
        except Exception:
            logger.exception("automatic retrain check failed for project %s", project.pk)
            continue
        if job is not None:
            jobs.append(job)
    return jobs


def new_label_count(project) -> int:
    """Usable labelled samples beyond those in the latest version's snapshot."""
    latest = project.model_versions.select_related("snapshot").order_by("-number").first()
    baseline = latest.snapshot.row_count if latest is not None else 0
    return usable_samples(project).count() - baseline


def auto_retrain_project(*, project) -> TrainingJob | None:
    """Request a retrain of ``project`` if its rule says it is due and no
    training is queued or running; returns the job, or None.

    1. Lock the project row, so two checks running at once (a slow beat and
       the next) cannot both find "nothing running" and queue two retrains.
    2. Read the rule, skip if a job is active, count the new labels.
    3. Request the retrain as nobody (``by=None``), and record why.
    """
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        every = (
            ModelSettings.objects.filter(project=project)
            .values_list("retrain_every", flat=True)
            .first()
        )
        if not every:
            return None
        if TrainingJob.objects.filter(project=project, state__in=ACTIVE).exists():
            return None
        new = new_label_count(project)
        if new < every:
            return None
        try:
            job = training_request(project=project, by=None)
        except TrainingError as error:
            logger.warning("automatic retrain of project %s refused: %s", project.pk, error)
            return None
        audit_record(
            actor=None,
            action="training.automatic",
            project=project,
            target=job,
            after={
                "reason": f"automatic: {new} new consensus labels (rule: every {every})",
                "new_labels": new,
                "retrain_every": every,
                "version": job.version.number,
            },
        )
    return job

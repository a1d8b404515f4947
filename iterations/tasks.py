import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import connections

from .models import TrainingJob
from .services import regression
from .services.training import (
    RUN_SOFT_TIME_LIMIT,
    RUN_TIME_LIMIT,
    heartbeat_seconds,
    stale_after,
    training_recover,
    training_run,
)

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="iterations.training_run",
    acks_late=True,
    # A worker killed mid-fit (SIGKILL, OOM) gives the message back to the
    # broker instead of losing the job.
    reject_on_worker_lost=True,
    soft_time_limit=RUN_SOFT_TIME_LIMIT,
    time_limit=RUN_TIME_LIMIT,
    serializer="json",
)
def training_run_task(self, job_id):
    """Run one training job (routed to the "training" queue by
    CELERY_TASK_ROUTES); running it twice is safe (the second run finds
    the job no longer queued and returns)."""
    job = training_run(job_id=job_id)
    if job.state == TrainingJob.State.RUNNING:
        # Another worker holds the job. The message came back, perhaps because
        # that worker was killed: look again once its heartbeat would be
        # stale, when training_run resets an orphaned job and runs it.
        stale = stale_after().total_seconds()
        raise self.retry(
            countdown=stale + heartbeat_seconds(),
            # Enough looks to outlast the longest run the holder may still make.
            max_retries=int(RUN_TIME_LIMIT // stale) + 2,
        )
    return {"job": job.pk, "state": job.state}


@shared_task(
    name="iterations.regression_run",
    acks_late=True,
    # Re-scoring is read-only until the report is written in one transaction,
    # so a message given back after a lost worker just runs the test again.
    reject_on_worker_lost=True,
    soft_time_limit=regression.RUN_SOFT_TIME_LIMIT,
    time_limit=regression.RUN_TIME_LIMIT,
    serializer="json",
)
def regression_run_task(version_id, by_id=None):
    """Run the regression test of one version (routed to the "training"
    queue: it loads models and scores like training does)."""
    from django.contrib.auth import get_user_model

    by = get_user_model().objects.filter(pk=by_id).first() if by_id is not None else None
    report = regression.regression_run_recorded(version_id=version_id, by=by)
    if report is None:
        return {"report": None}
    return {"report": report.pk, "content_hash": report.content_hash, "passed": report.passed}


@shared_task(
    name="iterations.auto_retrain_check",
    soft_time_limit=5 * 60,
    time_limit=6 * 60,
    serializer="json",
)
def auto_retrain_check_task():
    """Beat: retrain each project whose "every N new labels" rule is due
    (see iterations.services.auto_retrain). Runs on the default queue: it
    only freezes a snapshot and queues the training job."""
    from .services.auto_retrain import auto_retrain_check

    jobs = auto_retrain_check()
    return {"queued": [job.pk for job in jobs]}


@worker_ready.connect
def _send_orphaned_training_jobs_again(**kwargs):
    """A worker starting (after a crash, say) takes up the jobs a dead worker
    left running; see ``training_recover``."""
    try:
        training_recover()
    except Exception:  # the worker must start even if the database is away
        logger.exception("could not look for orphaned training jobs")
    finally:
        # The pool forks from this process: no connection may be inherited.
        connections.close_all()

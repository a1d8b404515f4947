from celery import shared_task

from .models import Project
from .services.importing import RUN_SOFT_TIME_LIMIT, RUN_TIME_LIMIT, import_job_run
from .services.queue import queue_expire_leases


@shared_task(name="labelling.queue_expire_leases")
def queue_expire_leases_task(project_id=None):
    """Periodic (Celery beat): give abandoned leases' samples back to the queue.

    ``queue_next`` also releases a project's expired leases on every call;
    this catches queues nobody is asking for samples from.
    """
    if project_id is None:
        return queue_expire_leases()
    project = Project.objects.filter(pk=project_id).first()
    return queue_expire_leases(project=project) if project else 0


@shared_task(
    name="labelling.import_job_run",
    acks_late=True,
    soft_time_limit=RUN_SOFT_TIME_LIMIT,
    time_limit=RUN_TIME_LIMIT,
)
def import_job_run_task(job_id):
    """Run one queued import. The job row owns the state; running it twice is
    safe (the second run finds the job no longer queued and returns)."""
    job = import_job_run(job_id=job_id)
    return {"job": job.pk, "state": job.state}

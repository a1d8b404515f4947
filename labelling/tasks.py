from celery import shared_task

from .models import Project
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

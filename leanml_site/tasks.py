"""Site-wide Celery tasks."""

from celery import shared_task


@shared_task(name="leanml.ping")
def ping():
    """Proves a worker is alive: ``manage.py worker_check`` sends it and waits
    for the result a worker stores in django-celery-results."""
    return "pong"

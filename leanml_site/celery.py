import contextlib
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leanml_site.settings")

app = Celery("leanml")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@contextlib.contextmanager
def tasks_run_here():
    """Celery tasks queued inside the block run at once, in this process: for
    commands that must finish their work without a worker (the demo under
    ``make run``, ``retrain --wait``), so nothing is left waiting in the queue."""
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = before

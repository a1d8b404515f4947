"""Monitoring's Celery tasks: thin, they take ids and call a service."""

from datetime import datetime, timedelta

from celery import shared_task
from django.utils import timezone

DRIFT_WINDOW = timedelta(days=1)


@shared_task(
    name="monitoring.drift_check",
    soft_time_limit=20 * 60,
    time_limit=21 * 60,
    serializer="json",
)
def drift_check_task(project_id=None, window_start=None, window_end=None):
    """Drift of one project's logs (or, from beat, of every project with logs
    in the window) over [window_start, window_end) — ISO times; by default
    the day that ended now. Re-running stores another check and refreshes the
    open alerts instead of duplicating them."""
    from django.db.models import Exists, OuterRef

    from labelling.models import Project

    from .models import PredictionLog
    from .services.drift import drift_check

    end = datetime.fromisoformat(window_end) if window_end else timezone.now()
    start = datetime.fromisoformat(window_start) if window_start else end - DRIFT_WINDOW
    projects = Project.objects.order_by("pk")
    if project_id is None:
        # One probe of the (project, timestamp) index per project.
        window = PredictionLog.objects.filter(
            project=OuterRef("pk"), timestamp__gte=start, timestamp__lt=end
        )
        projects = projects.filter(Exists(window))
    else:
        projects = projects.filter(pk=project_id)
    checks = []
    for project in projects:
        checks += drift_check(project=project, window_start=start, window_end=end)
    return {"checks": [c.pk for c in checks]}


@shared_task(
    name="monitoring.surfacing_run",
    acks_late=True,
    # The run's rows are written in one transaction at its end, and the run
    # row is claimed (queued → running) first: a message given back after a
    # lost worker, or delivered twice, never surfaces twice.
    reject_on_worker_lost=True,
    soft_time_limit=15 * 60,
    time_limit=16 * 60,
    serializer="json",
)
def surfacing_run_task(run_id):
    """Surface one queued run's budget into the labelling queue."""
    from .services.surfacing import surfacing_run

    run = surfacing_run(run_id=run_id)
    return {"run": run.pk, "state": run.state, "counts": run.counts}


@shared_task(name="monitoring.surfacing_due", soft_time_limit=5 * 60, time_limit=6 * 60)
def surfacing_due_task():
    """Beat, hourly: queue a run for each project whose "surface every N
    hours" is due."""
    from .services.surfacing import surfacing_due

    return {"runs": [run.pk for run in surfacing_due()]}


@shared_task(
    name="monitoring.metrics_update",
    soft_time_limit=30 * 60,
    time_limit=31 * 60,
    serializer="json",
)
def metrics_update_task(project_id=None):
    """Fold new logs and ground truth into the metric windows of one project
    or, from beat, of every project with logs. A run with nothing new costs
    two indexed lookups per project; runs overlapping (a slow one and the
    next beat) wait on the project's cursor lock instead of counting twice."""
    from django.db.models import Exists, OuterRef

    from labelling.models import Project

    from .models import PredictionLog
    from .services.metrics import metrics_update

    projects = Project.objects.order_by("pk")
    if project_id is None:
        # One index probe per project, where a DISTINCT over the log table
        # would read all of it at every beat.
        projects = projects.filter(Exists(PredictionLog.objects.filter(project=OuterRef("pk"))))
    else:
        projects = projects.filter(pk=project_id)
    runs = {}
    for project in projects:
        run = metrics_update(project=project)
        runs[project.pk] = {"logs": run.logs, "truth": run.truth, "seconds": run.seconds}
    return runs

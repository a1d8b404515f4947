"""Send a ``ping`` job and wait for a Celery worker to process it.

Exit status 0 means a real worker took the job off the broker and stored its
result; anything else fails with a message saying what to look at.
"""

import time

from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_celery_results.models import TaskResult

from leanml_site.tasks import ping


class Command(BaseCommand):
    help = "Send a ping job to the Celery worker and wait until a worker has processed it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--timeout", type=float, default=60, help="Seconds to wait for the worker (60)."
        )
        parser.add_argument("--queue", default="celery", help="Queue to send the ping to (celery).")

    def handle(self, *args, timeout, queue, **options):
        if settings.CELERY_TASK_ALWAYS_EAGER:
            # An eager task runs in this process: it would "pass" with no worker at all.
            raise CommandError(
                "CELERY_TASK_ALWAYS_EAGER is on, so no worker would be involved; unset it."
            )
        started = time.monotonic()
        # Expires with the wait, so a worker started later does not answer a stale ping.
        result = ping.apply_async(queue=queue, expires=timeout)
        try:
            value = result.get(timeout=timeout, interval=0.2)
        except CeleryTimeout:
            result.forget()
            raise CommandError(
                f"No worker processed the ping job {result.id} on queue '{queue}' within "
                f"{timeout:g} s (broker {_broker_name()}). Is a worker running "
                f"(`manage.py serve` starts one) and reading the same broker and database?"
            ) from None
        if value != "pong":
            raise CommandError(f"The ping job {result.id} answered {value!r}, not 'pong'.")
        row = TaskResult.objects.filter(task_id=result.id).first()
        worker = (row.worker if row else "") or "a worker"
        self.stdout.write(
            self.style.SUCCESS(
                f"{worker} processed ping job {result.id} in {time.monotonic() - started:.1f} s "
                f"(broker {_broker_name()})."
            )
        )


def _broker_name():
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        return f"embedded filesystem broker in {settings.VAR_DIR / 'broker'}"
    # Never print a password that may be in the URL.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"

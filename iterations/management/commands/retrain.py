from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from iterations.models import TrainingJob
from iterations.services.iterations import latest_report
from iterations.services.training import TrainingError, training_request, training_run
from labelling.models import Project
from leanml_site.celery import tasks_run_here


class Command(BaseCommand):
    help = (
        "Train a new model version of a project on a fresh snapshot of its labels. "
        "By default the job is queued for a Celery worker on the 'training' queue; "
        "with --wait it runs here, in this process, with its regression test, and the "
        "command returns when both end (handy without a worker)."
    )

    def add_arguments(self, parser):
        parser.add_argument("project_id", type=int)
        parser.add_argument(
            "--refit",
            default="",
            help="Comma-separated sub-model keys to fit anew (default: all); "
            "the others are reused from the parent version.",
        )
        parser.add_argument("--user", default="", help="Username recorded as the requester.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Run the training in this process instead of queueing it for a worker.",
        )

    def handle(self, *args, project_id, refit, user, seed, wait, **options):
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(f"There is no project with id {project_id}.")
        by = None
        if user:
            by = get_user_model().objects.filter(username=user).first()
            if by is None:
                raise CommandError(f"There is no user named {user!r}.")
        keys = [k.strip() for k in refit.split(",") if k.strip()] or None
        try:
            if wait:
                job = training_request(project=project, by=by, refit=keys, seed=seed, queue=False)
                # The regression test a successful training queues runs here too.
                with tasks_run_here():
                    job = training_run(job_id=job.pk)
            else:
                job = training_request(project=project, by=by, refit=keys, seed=seed)
        except TrainingError as error:
            raise CommandError(str(error)) from None
        version = job.version
        self.stdout.write(
            f"Training job {job.pk} for version {version.number}: {job.state}"
            + (f" — {job.message}" if job.message else "")
        )
        if job.state == TrainingJob.State.FAILED:
            raise CommandError(job.message or "training failed")
        report = latest_report(version) if wait else None
        if report is not None:
            gates = "all gates passed" if report.passed else "a gate failed"
            self.stdout.write(f"Regression report {report.content_hash[:12]}: {gates}.")

"""Import a CSV, JSON, JSON Lines or Label Studio file into a project, in this process.

    manage.py import_samples 3 reviews.csv --user alice --label-column score

For files too large to upload, and for scripts. All-or-nothing like an upload;
prints the counts, or the error (file, row, column, value) and exits non-zero.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from labelling.models import ImportJob, Project
from labelling.services.importing import import_path


class Command(BaseCommand):
    help = "Import samples from a file into a project (all-or-nothing)."

    def add_arguments(self, parser):
        parser.add_argument("project_id", type=int)
        parser.add_argument("file")
        parser.add_argument("--user", required=True, help="Username the import is recorded under.")
        parser.add_argument(
            "--format",
            choices=ImportJob.Format.values,
            default=None,
            help="File format (default: from the file's extension).",
        )
        parser.add_argument("--policy", choices=ImportJob.Policy.values, default="skip")
        parser.add_argument("--id-column", default="id")
        parser.add_argument("--label-column", default="")

    def handle(self, *args, project_id, file, user, **options):
        by = get_user_model().objects.filter(username=user).first()
        if by is None:
            raise CommandError(f"No user named '{user}'.")
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(f"No project with id {project_id}.")
        job = import_path(
            project=project,
            by=by,
            path=file,
            fmt=options["format"],
            policy=options["policy"],
            id_column=options["id_column"],
            label_column=options["label_column"],
        )
        if job.state != ImportJob.State.SUCCEEDED:
            raise CommandError(job.error["message"] if job.error else job.message)
        self.stdout.write(job.message)
        for key, value in job.counts.items():
            if key != "warnings":
                self.stdout.write(f"{key}: {value}")
        for warning in job.counts.get("warnings", ()):
            self.stdout.write(self.style.WARNING(f"Warning: {warning}"))

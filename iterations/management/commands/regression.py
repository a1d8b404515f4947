from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from iterations.models import ModelVersion
from iterations.services.regression import RegressionError, regression_request, regression_run
from labelling.models import Project


class Command(BaseCommand):
    help = (
        "Run the regression test of a model version again (default: the project's newest "
        "trained version) on the current holdout. It runs here, in this process, and "
        "prints the report; with --queue it is queued for a worker on the 'training' queue."
    )

    def add_arguments(self, parser):
        parser.add_argument("project_id", type=int)
        parser.add_argument("version_number", type=int, nargs="?")
        parser.add_argument("--user", default="", help="Username recorded as the requester.")
        parser.add_argument(
            "--queue", action="store_true", help="Queue the test for a worker instead."
        )

    def handle(self, *args, project_id, version_number, user, queue, **options):
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise CommandError(f"There is no project with id {project_id}.")
        by = None
        if user:
            by = get_user_model().objects.filter(username=user).first()
            if by is None:
                raise CommandError(f"There is no user named {user!r}.")
        versions = project.model_versions.all()
        if version_number is None:
            version = (
                versions.exclude(
                    status__in=(ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED)
                )
                .order_by("-number")
                .first()
            )
            if version is None:
                raise CommandError(f"{project} has no trained model version to test.")
        else:
            version = versions.filter(number=version_number).first()
            if version is None:
                raise CommandError(f"{project} has no version {version_number}.")
        try:
            if queue:
                regression_request(version=version, by=by)
                self.stdout.write(f"Regression test of version {version.number} queued.")
                return
            report = regression_run(version_id=version.pk, by=by)
        except RegressionError as error:
            raise CommandError(str(error)) from None
        payload = report.payload
        self.stdout.write(
            f"Report {report.content_hash[:12]} for version {version.number} on "
            f"{payload['holdout']['n']} holdout samples: gates "
            + ("passed" if report.passed else "FAILED")
        )
        for version_entry in payload["versions"]:
            metrics = version_entry["metrics"]
            self.stdout.write(
                f"  v{version_entry['number']} ({version_entry['role']}): "
                + (
                    f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
                    if metrics
                    else version_entry["error"]
                )
            )
        for gate in payload["gates"]["results"]:
            self.stdout.write(f"  [{'pass' if gate['passed'] else 'FAIL'}] {gate['sentence']}")
        timings = payload["timings"]
        self.stdout.write(f"  {timings['total_s']:.2f} s")

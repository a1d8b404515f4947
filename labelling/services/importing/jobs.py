"""Import jobs: create, run (inline or on Celery), report progress, record the outcome."""

import contextlib
import logging
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from leanml_site import textfiles
from leanml_site.audit import audit_record

from ...models import ImportJob, LabelClass, Project, Sample
from .preparing import (
    Plan,
    PostgresStage,
    Spool,
    check_columns,
    infer_fields,
    label_like_warnings,
    prepare,
)
from .reading import (
    ImportFileError,
    Options,
    check_text,
    csv_header,
    detect_format,
    shorten,
)
from .writing import (
    analyze_tables,
    project_fields_set,
    write_new_portable,
    write_new_postgres,
    write_updates,
)

logger = logging.getLogger(__name__)

# The Celery task's hard limit; a job still "running" well after it was
# started belongs to a worker that died, and its transaction was rolled back.
RUN_SOFT_TIME_LIMIT = 1800
RUN_TIME_LIMIT = 1900
STALE_AFTER = timedelta(seconds=RUN_TIME_LIMIT + 120)
# After this many new samples the planner's statistics are refreshed at once
# (see analyze_tables).
ANALYZE_AFTER_ROWS = 10_000


def progress_key(job_id):
    return f"leanml:import-progress:{job_id}"


def import_job_progress(job) -> tuple[float, str]:
    """(fraction, message) of a job. While it writes, progress lives in the
    cache: rows written inside the transaction are invisible to other
    connections, and so would a progress column updated in it be."""
    if job.state == ImportJob.State.RUNNING:
        cached = cache.get(progress_key(job.pk))
        if cached:
            return cached
    return job.progress, job.message


class _Reporter:
    def __init__(self, job):
        self.job = job
        self.in_transaction = False
        self.message = ""

    def __call__(self, fraction, message):
        message = message or self.message
        self.message = message
        fraction = round(min(max(fraction, 0.0), 1.0), 3)
        cache.set(progress_key(self.job.pk), (fraction, message), timeout=3600)
        if not self.in_transaction:
            ImportJob.objects.filter(pk=self.job.pk).update(progress=fraction, message=message)


def _summary(counts):
    parts = [f"{counts['created']:,} new"]
    if counts["updated"]:
        parts.append(f"{counts['updated']:,} updated")
    if counts["unchanged"]:
        parts.append(f"{counts['unchanged']:,} unchanged")
    if counts["skipped"]:
        parts.append(f"{counts['skipped']:,} skipped (id already in the project)")
    if counts["labels"]:
        parts.append(f"{counts['labels']:,} labels")
    text = f"Imported {counts['rows']:,} rows: {', '.join(parts)}."
    if counts["duplicates"]:
        text += f" {counts['duplicates']:,} exact duplicates found — review and merge."
    if counts.get("label_like"):
        names = ", ".join(f"“{shorten(name, 40)}”" for name in counts["label_like"])
        text += f" Warning: {names} imported as sample data, not as labels (see the job)."
    return shorten(text, 255)


def _tune_import_transaction():
    """Settings for this import's transaction only (SET LOCAL ends with it).

    synchronous_commit off: COMMIT returns without waiting for its WAL to
    reach the disk. A server crash in that moment (under a second) loses the
    whole import, never half of it: replay applies a transaction entirely or
    not at all, and the database stays consistent. The job is marked
    succeeded afterwards by an ordinary (synchronous) commit, whose flush
    takes the import's earlier WAL with it, so a job that reads "succeeded"
    was never lost. Other transactions keep the server's setting.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")


def _import(job, path, report):
    """Both phases for one job; returns the counts or raises ImportFileError."""
    project = Project.objects.get(pk=job.project_id)
    options = Options(
        file=job.original_name,
        fmt=job.format,
        id_column=job.id_column,
        label_column=job.label_column,
        policy=job.policy,
    )
    plan = Plan(
        kinds={f["name"]: f.get("kind", "text") for f in project.fields},
        text_field=project.text_field,
        new_fields=None,
        classes=dict(LabelClass.objects.filter(project=project).values_list("name", "id")),
        fresh=not Sample.objects.filter(project=project).exists(),
    )
    check_text(path, options)
    if options.fmt == ImportJob.Format.CSV:
        check_columns(csv_header(path, options), options, plan)
    if not project.fields:
        report(0.02, "Choosing field kinds from the file's columns")
        plan.new_fields = infer_fields(path, options, lambda f: None)
        plan.kinds = {f["name"]: f["kind"] for f in plan.new_fields}
        plan.text_field = next((f["name"] for f in plan.new_fields if f["kind"] == "text"), None)

    new_rows = PostgresStage() if connection.vendor == "postgresql" else Spool()
    updates = Spool()
    try:
        started = time.monotonic()
        prepare(project, path, options, plan, new_rows, updates, report)
        checked = time.monotonic()
        total = plan.created + plan.to_update
        report(0.6, f"Writing {total:,} samples")
        report.in_transaction = True
        now = timezone.now()
        try:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    _tune_import_transaction()
                # One import at a time per project: the second waits here and
                # then finds the first one's ids (IntegrityError below).
                project = Project.objects.select_for_update().get(pk=project.pk)
                if plan.new_fields:
                    project_fields_set(project, job.created_by, plan.new_fields)
                if isinstance(new_rows, PostgresStage):
                    written = write_new_postgres(project, job.created_by, new_rows, now, report)
                else:
                    written = write_new_portable(project, job.created_by, new_rows, now, report)
                report(0.96, "Recording updates")
                written["labels"] += write_updates(
                    project, job.created_by, updates, f"updated by import {job.pk}"
                )
                counts = {
                    "rows": plan.rows,
                    "created": plan.created,
                    "updated": plan.to_update,
                    "unchanged": plan.unchanged,
                    "skipped": plan.skipped,
                    "labels": written["labels"],
                    "queued": written["queued"],
                    "duplicates": plan.duplicates,
                }
                if warnings := label_like_warnings(plan):
                    counts["label_like"] = [name for name, _ in warnings]
                    counts["warnings"] = [text for _, text in warnings]
                audit_record(
                    actor=job.created_by,
                    project=project,
                    action="import.succeeded",
                    target=job,
                    after={"file": job.original_name, **counts},
                )
            logger.info(
                "import %s: %s rows read and checked in %.1f s, written and committed in %.1f s",
                job.pk,
                plan.rows,
                checked - started,
                time.monotonic() - checked,
            )
        except IntegrityError as exc:
            logger.warning("import %s lost a race: %s", job.pk, exc)
            raise options.error(
                "some of these ids were added to the project while the file was being read "
                "(by another import?). Nothing was imported; import the file again."
            ) from None
        finally:
            report.in_transaction = False
    finally:
        new_rows.close()
        updates.close()
    if connection.vendor == "postgresql" and plan.created >= ANALYZE_AFTER_ROWS:
        report(0.97, "Updating the query planner's statistics")
        analyze_tables(labels=counts["labels"] > 0)
    if options.fmt != job.format:
        ImportJob.objects.filter(pk=job.pk).update(format=options.fmt)
    return counts


@contextlib.contextmanager
def _local_path(job):
    try:
        path = job.file.path
    except NotImplementedError:
        path = None  # remote storage
    if path is not None:
        yield path
        return
    # pandas wants a local file it can read more than once.
    with tempfile.NamedTemporaryFile(suffix=Path(job.original_name).suffix) as tmp:
        with job.file.open("rb") as source:
            shutil.copyfileobj(source, tmp)
        tmp.flush()
        yield tmp.name


def _claim(job_id):
    """queued -> running, changing exactly one row; a job a dead worker left
    "running" past the time limit is taken over (its transaction never
    committed). Anything else is already done or in hand: leave it."""
    now = timezone.now()
    return (
        ImportJob.objects.filter(pk=job_id)
        .filter(
            Q(state=ImportJob.State.QUEUED)
            | Q(state=ImportJob.State.RUNNING, started_at__lt=now - STALE_AFTER)
        )
        .update(
            state=ImportJob.State.RUNNING,
            started_at=now,
            progress=0,
            message="Starting",
            error=None,
        )
        == 1
    )


def _run(job_id, path=None) -> ImportJob:
    if not _claim(job_id):
        return ImportJob.objects.get(pk=job_id)
    job = ImportJob.objects.select_related("created_by", "project").get(pk=job_id)
    report = _Reporter(job)
    try:
        if path is not None:
            counts = _import(job, path, report)
        else:
            if not job.file:
                raise ImportFileError("the uploaded file is not stored any more.")
            with _local_path(job) as local:
                counts = _import(job, local, report)
    except ImportFileError as exc:
        error = exc.as_dict()
        error["file"] = error["file"] or job.original_name
        _fail(job, error)
    except Exception as exc:
        logger.exception("import %s failed", job_id)
        _fail(
            job,
            {
                "message": f"{job.original_name}: the import stopped unexpectedly "
                f"({type(exc).__name__}). Nothing was imported.",
                "row": None,
                "column": None,
                "value": None,
                "file": job.original_name,
            },
        )
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            state=ImportJob.State.SUCCEEDED,
            progress=1.0,
            message=_summary(counts),
            counts={**job.counts, **counts},
            finished_at=timezone.now(),
        )
    cache.delete(progress_key(job.pk))
    job.refresh_from_db()
    return job


def _fail(job, error):
    ImportJob.objects.filter(pk=job.pk).update(
        state=ImportJob.State.FAILED,
        error=error,
        message=shorten(error["message"], 255),
        finished_at=timezone.now(),
    )
    audit_record(
        actor=job.created_by,
        project=job.project,
        action="import.failed",
        target=job,
        after=error,
    )


def import_job_run(*, job_id) -> ImportJob:
    """Run a queued import job to succeeded or failed. Safe to call again:
    a job that is running or finished is returned untouched."""
    return _run(job_id)


def _new_job(*, project, by, name, fmt, policy, id_column, label_column):
    if policy not in ImportJob.Policy.values:
        raise ValueError(f"policy must be one of {', '.join(ImportJob.Policy.values)}.")
    if fmt and fmt not in ImportJob.Format.values:
        raise ValueError(f"format must be one of {', '.join(ImportJob.Format.values)}.")
    fmt = fmt or detect_format(name)
    job = ImportJob(
        project=project,
        created_by=by,
        original_name=shorten(os.path.basename(name) or "upload", 255),
        format=fmt or ImportJob.Format.CSV,
        policy=policy,
        id_column=(id_column or "id").strip(),
        label_column=(label_column or "").strip(),
    )
    return job, fmt is None


def _unknown_format(job, head):
    """Why a file whose format the name does not tell is refused: a binary
    file is said to be one (its name may well end .png or .xlsx)."""
    kind = textfiles.binary_kind(head)
    if kind is not None:
        return textfiles.not_text_message(job.original_name, kind)
    return (
        f"{job.original_name}: can't tell the format from the file name "
        f"“{job.original_name}”: use .csv, .json or .jsonl, or choose the format."
    )


def _refuse(job, message):
    job.state = ImportJob.State.FAILED
    job.error = {
        "message": message,
        "row": None,
        "column": None,
        "value": None,
        "file": job.original_name,
    }
    job.message = shorten(job.error["message"], 255)
    job.finished_at = timezone.now()
    job.save()
    audit_record(
        actor=job.created_by,
        project=job.project,
        action="import.failed",
        target=job,
        after=job.error,
    )
    return job


def _too_big(job, size):
    limit = settings.LEANML_MAX_UPLOAD_MB
    if size > limit * 1024 * 1024:
        return (
            f"{job.original_name}: the file is {size / 2**20:,.1f} MB; the upload limit is "
            f"{limit:,} MB "
            "(LEANML_MAX_UPLOAD_MB). Split it, or import it on the server with "
            "manage.py import_samples."
        )
    return None


def import_job_create(
    *, project, by, uploaded_file, fmt=None, policy="skip", id_column="id", label_column=""
) -> ImportJob:
    """Store an uploaded file as an import job and run it.

    Files up to LEANML_INLINE_IMPORT_BYTES run now, in the request; larger
    ones are queued on Celery once the job row is committed. A file over the
    upload limit, or of an unknown format, becomes a failed job at once
    (nothing stored, nothing read). Bad arguments raise ValueError.
    """
    job, unknown_format = _new_job(
        project=project,
        by=by,
        name=uploaded_file.name,
        fmt=fmt,
        policy=policy,
        id_column=id_column,
        label_column=label_column,
    )
    problem = _too_big(job, uploaded_file.size)
    if problem is None and unknown_format:
        uploaded_file.seek(0)
        problem = _unknown_format(job, uploaded_file.read(textfiles.HEAD_BYTES))
        uploaded_file.seek(0)
    if problem:
        return _refuse(job, problem)
    job.file.save(job.original_name, uploaded_file, save=False)
    job.save()
    if uploaded_file.size <= settings.LEANML_INLINE_IMPORT_BYTES:
        return import_job_run(job_id=job.pk)
    transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id):
    from ...tasks import import_job_run_task

    try:
        result = import_job_run_task.delay(job_id)
    except Exception as exc:
        # The broker is down: say so on the job instead of running a large
        # import inside the web request.
        logger.exception("could not queue import %s", job_id)
        job = ImportJob.objects.select_related("created_by", "project").get(pk=job_id)
        _fail(
            job,
            {
                "message": f"{job.original_name}: the import could not be queued: the task "
                f"broker is unreachable ({type(exc).__name__}). Try again later.",
                "row": None,
                "column": None,
                "value": None,
                "file": job.original_name,
            },
        )
        return
    ImportJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


def import_path(
    *, project, by, path, fmt=None, policy="skip", id_column="id", label_column=""
) -> ImportJob:
    """Import a file already on this machine, in this process (for scripts and
    ``manage.py import_samples``); recorded as a job like an upload."""
    path = Path(path)
    job, unknown_format = _new_job(
        project=project,
        by=by,
        name=path.name,
        fmt=fmt,
        policy=policy,
        id_column=id_column,
        label_column=label_column,
    )
    if not path.is_file():
        return _refuse(job, f"{job.original_name}: there is no file at {path}.")
    problem = _too_big(job, path.stat().st_size)
    if problem is None and unknown_format:
        with path.open("rb") as handle:
            problem = _unknown_format(job, handle.read(textfiles.HEAD_BYTES))
    if problem:
        return _refuse(job, problem)
    job.save()
    return _run(job.pk, path=str(path))

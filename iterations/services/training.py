"""Training: request a new model version, and run its job on a worker.

The ``TrainingJob`` row owns the state. A worker claims it with an update that
must change exactly one row, writes progress in short transactions other
connections can read at once, and flips the version to ``candidate`` only at
the very end, in one transaction: a worker killed half-way leaves the version
in ``training`` (never promotable) and the job re-runnable.
"""

import logging
import platform
import threading
import time
import traceback
from datetime import timedelta
from functools import partial

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from labelling.models import LabelClass, Project, SampleRevision
from leanml_site.audit import audit_record
from ml.ensemble import Ensemble
from ml.submodels import create

from ..models import (
    Artifact,
    EnsembleConfig,
    ModelVersion,
    SnapshotRow,
    TrainingJob,
)
from .artifacts import artifact_load, artifact_write, combiner_state
from .regression import regression_queue_after_training
from .snapshots import snapshot_create

logger = logging.getLogger(__name__)


def heartbeat_seconds() -> float:
    """How often a thread beats while the run is alive, fitting included, so
    a live but slow job is never mistaken for a dead one."""
    return float(settings.LEANML_TRAINING_HEARTBEAT_SECONDS)


def stale_after() -> timedelta:
    """A running job whose heartbeat is older than this is taken as orphaned
    (its worker died) and is run again from scratch. Both are settings, read
    on each call, so a test's worker can notice a dead one in seconds."""
    return timedelta(seconds=settings.LEANML_TRAINING_STALE_SECONDS)


RUN_SOFT_TIME_LIMIT = 25 * 60
RUN_TIME_LIMIT = RUN_SOFT_TIME_LIMIT + 120
# Versions a new one may descend from (and reuse sub-models of).
PARENT_STATES = (
    ModelVersion.Status.PRODUCTION,
    ModelVersion.Status.CANARY,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.CANDIDATE,
)
COMBINERS = {
    # "stacking" falls back to soft voting when a class has too few labels
    # for the folds, rather than refusing to train a young project.
    EnsembleConfig.Combiner.STACKING: "auto",
    EnsembleConfig.Combiner.SOFT_VOTING: "voting",
}


class TrainingError(ValueError):
    """The request cannot be honoured; the message says why, for people."""


class _Cancelled(Exception):
    pass


# --- request ---------------------------------------------------------------------------


def ensemble_config_default(*, project, by=None) -> EnsembleConfig:
    """The project's latest ensemble configuration, or a first sensible one:
    TF-IDF on the first text field, gradient boosting on the numeric and
    categorical fields, keyword rules when the experts have written some."""
    latest = project.ensemble_configs.order_by("-number").first()
    if latest is not None:
        return latest
    fields = project.fields or []
    text = [f["name"] for f in fields if f.get("kind") == "text"]
    other = [f["name"] for f in fields if f.get("kind") in {"number", "category"}]
    submodels = []
    if text:
        submodels.append({"key": "text", "name": "tfidf_logreg", "fields": text[:1], "params": {}})
    if other:
        submodels.append({"key": "fields", "name": "hist_gbm", "fields": other, "params": {}})
    if text and project.rule_sets.exists():
        submodels.append({"key": "rules", "name": "keyword_rules", "fields": text, "params": {}})
    if not submodels:
        raise TrainingError(
            f"{project} has no text, number or category fields to train on; "
            "describe the sample fields first."
        )
    return EnsembleConfig.objects.create(
        project=project,
        number=1,
        submodels=submodels,
        note="Default ensemble chosen from the project's fields.",
        created_by=by,
    )


def _parent_of(project):
    production = project.model_versions.filter(status=ModelVersion.Status.PRODUCTION).first()
    if production is not None:
        return production
    return project.model_versions.filter(status__in=PARENT_STATES).order_by("-number").first()


def training_request(*, project, by, refit=None, seed=0, queue=True) -> TrainingJob:
    """Freeze the data, create the next model version and its job, and queue it.

    ``refit`` names the sub-model keys to fit anew (None: all); the others are
    reused from the parent version (production, else the latest candidate).
    A key the parent has no artifact for is fitted anyway. The task is queued
    after commit; if the broker is unreachable the job is marked failed with
    that reason, so nothing is silently run in the request or lost.
    ``queue=False`` leaves the job queued for the caller to run in-process
    (``manage.py retrain --wait``).
    """
    with transaction.atomic():
        # Serialise requests of one project: version numbers are max + 1.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        config = ensemble_config_default(project=project, by=by)
        keys = [entry["key"] for entry in config.submodels]
        parent = _parent_of(project)
        if refit is not None:
            refit = list(dict.fromkeys(refit))
            unknown = [k for k in refit if k not in keys]
            if unknown:
                raise TrainingError(
                    f"unknown sub-model key(s) {unknown}; the ensemble v{config.number} has {keys}"
                )
        reusable = set()
        if parent is not None and parent.ensemble_id is not None:
            parent_keys = set(parent.artifacts.values_list("key", flat=True))
            reusable = {k for k in keys if k in parent_keys}
        refit_keys = keys if refit is None else [k for k in keys if k in refit or k not in reusable]
        snapshot = snapshot_create(project=project, by=by)
        number = (project.model_versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            project=project,
            number=number,
            parent=parent,
            snapshot=snapshot,
            ensemble=config,
            rule_set=project.rule_sets.order_by("-number").first(),
            seed=seed,
            library_versions=_library_versions(),
            created_by=by,
        )
        job = TrainingJob.objects.create(
            project=project, version=version, refit=refit_keys, requested_by=by
        )
        audit_record(
            actor=by,
            action="training.request",
            project=project,
            target=job,
            after={
                "version": number,
                "parent": parent.number if parent else None,
                "refit": refit_keys,
                "snapshot": snapshot.content_hash,
            },
        )
        audit_record(
            actor=by,
            action="model_version.status",
            project=project,
            target=version,
            after={"status": version.status},
        )
        if queue:
            transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job


def _enqueue(job_id):
    from ..tasks import training_run_task

    try:
        result = training_run_task.delay(job_id)
    except Exception as error:
        # Broker down: record it on the job rather than training inside the
        # web request; the snapshot and version stay for the record.
        logger.exception("could not queue training job %s", job_id)
        job = TrainingJob.objects.select_related("version", "project").get(pk=job_id)
        _finish_failed(
            job,
            message=f"the task queue is unreachable: {type(error).__name__}: {error}"[:255],
            error=traceback.format_exc(),
            actor=job.requested_by,
            from_states=(TrainingJob.State.QUEUED,),
        )
        return
    TrainingJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


def _library_versions() -> dict:
    import scipy
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "skops": skops.__version__,
    }


# --- cancel ----------------------------------------------------------------------------


def training_cancel(*, job, by) -> TrainingJob:
    """Ask a job to stop. A queued job ends at once; a running one ends at
    its next step. Finished jobs are left as they are."""
    TrainingJob.objects.filter(
        pk=job.pk, state__in=(TrainingJob.State.QUEUED, TrainingJob.State.RUNNING)
    ).update(cancel_requested=True)
    audit_record(actor=by, action="training.cancel_request", project=job.project, target=job)
    # A queued job is never claimed again (the claim requires no cancel request).
    job.refresh_from_db()
    if job.state == TrainingJob.State.QUEUED:
        _finish_cancelled(job, actor=by, from_states=(TrainingJob.State.QUEUED,))
        job.refresh_from_db()
    return job


# --- recover ---------------------------------------------------------------------------


def training_recover() -> list[int]:
    """Send the task of every running job again (a worker does this as it
    starts) and return their ids.

    A worker killed as a whole (SIGKILL of its process group, a machine that
    died) gives no message back: the embedded broker has already handed it
    over, and Redis returns it only after its visibility timeout, an hour
    later. Its job would stay ``running`` with a stale heartbeat and never
    end. Sent again, the task resets a job whose heartbeat is stale and runs
    it from scratch; a job whose heartbeat is fresh is looked at again once it
    would be stale (the task retries), so a job a live worker is running is
    left to it. Sending twice is safe: only one claim goes through.
    """
    ids = list(
        TrainingJob.objects.filter(state=TrainingJob.State.RUNNING).values_list("pk", flat=True)
    )
    for job_id in ids:
        logger.info("sending training job %s again, in case its worker died", job_id)
        _enqueue(job_id)
    return ids


# --- run -------------------------------------------------------------------------------


def training_run(*, job_id) -> TrainingJob:
    """Run one training job (the Celery task and ``retrain --wait`` call this).

    1. Reset the job if it is ``running`` with a stale heartbeat (its worker
       died): the earlier attempt's artifact rows are removed.
    2. Claim it: queued → running must change exactly one row; otherwise
       another worker has it or it is finished, and nothing happens.
    3. Load the snapshot's train rows at their snapshotted revision; fit the
       ensemble, reusing the parent's artifacts for keys not refitted; write
       the artifacts. Progress and heartbeat are written between steps, and
       a cancel request is honoured there.
    4. In one transaction: version → candidate, job → succeeded.
    """
    _reset_if_orphaned(job_id)
    now = timezone.now()
    claimed = TrainingJob.objects.filter(
        pk=job_id, state=TrainingJob.State.QUEUED, cancel_requested=False
    ).update(
        state=TrainingJob.State.RUNNING,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        progress=0,
        message="Starting",
        error="",
        attempts=F("attempts") + 1,
    )
    job = TrainingJob.objects.select_related("project", "version", "requested_by").get(pk=job_id)
    if claimed != 1:
        if job.state == TrainingJob.State.QUEUED and job.cancel_requested:
            _finish_cancelled(job, actor=None, from_states=(TrainingJob.State.QUEUED,))
            job.refresh_from_db()
        return job
    log = _Log(job)
    heartbeat = _Heartbeat(job.pk, log.attempt)
    heartbeat.start()
    try:
        _train(job, log)
    except _Cancelled:
        log.write("Cancelled at the data scientist's request.")
        _finish_cancelled(job, actor=job.requested_by, from_states=(TrainingJob.State.RUNNING,))
    except Exception as error:
        logger.exception("training job %s failed", job_id)
        log.write(f"Failed: {error}")
        _finish_failed(
            job,
            message=_one_line(error),
            error=traceback.format_exc(),
            actor=job.requested_by,
            from_states=(TrainingJob.State.RUNNING,),
        )
    finally:
        heartbeat.stop()
    job.refresh_from_db()
    return job


def _train(job, log):
    version = job.version
    config = version.ensemble
    classes = list(
        LabelClass.objects.filter(project=job.project)
        .order_by("order", "name")
        .values_list("name", flat=True)
    )

    log.step(0.05, "Loading the snapshot's training rows")
    frame, labels = snapshot_train_frame(version.snapshot)
    log.write(f"{len(frame)} training rows from snapshot {version.snapshot.content_hash[:10]}")
    _check_holdout(version.snapshot, classes)

    log.step(0.15, "Preparing sub-models")
    submodels = [_build_submodel(entry, version) for entry in config.submodels]
    keys = [m.key for m in submodels]
    refit = [k for k in job.refit if k in keys]
    reuse, sources = {}, {}
    if version.parent_id is not None:
        parent_artifacts = {a.key: a for a in version.parent.artifacts.all()}
        for key in keys:
            if key in refit:
                continue
            if key not in parent_artifacts:
                refit.append(key)
                continue
            log.step(0.2, f"Loading {key!r} from version {version.parent.number}")
            reuse[key] = artifact_load(parent_artifacts[key])
            sources[key] = parent_artifacts[key].source or parent_artifacts[key]
    else:
        refit = list(keys)

    log.step(0.3, f"Fitting {', '.join(refit) or 'the combiner only'}")
    ensemble = Ensemble(
        submodels,
        classes=classes,
        combiner=COMBINERS.get(config.combiner, "auto"),
        weights=config.weights or None,
    )
    ensemble.fit(frame, labels, seed=version.seed, refit=set(refit), reuse=reuse)
    report = ensemble.fit_report_
    log.write(f"Combiner: {report.combiner} ({report.reason})")
    for key in report.refitted:
        log.write(f"Fitted {key!r} in {report.seconds.get(key, 0):.2f} s")
    for key in report.reused:
        log.write(f"Reused {key!r} from version {sources[key].version.number}")

    log.step(0.8, "Writing artifacts")
    # Leftovers of an earlier, killed attempt would clash with the unique key.
    version.artifacts.all().delete()
    for model in ensemble.submodels:
        if model.key in sources:
            source = sources[model.key]
            Artifact.objects.create(
                version=version,
                key=model.key,
                file=source.file.name,
                sha256=source.sha256,
                size_bytes=source.size_bytes,
                source=source,
            )
        else:
            artifact_write(
                version=version,
                key=model.key,
                obj=model,
                fit_seconds=report.seconds.get(model.key),
            )
        log.check_cancel()
    artifact_write(
        version=version,
        key=Artifact.COMBINER,
        obj=combiner_state(ensemble),
        fit_seconds=report.combiner_seconds,
    )

    log.step(0.95, "Finishing")
    with transaction.atomic():
        done = TrainingJob.objects.filter(
            pk=job.pk,
            state=TrainingJob.State.RUNNING,
            attempts=log.attempt,
            cancel_requested=False,
        ).update(
            state=TrainingJob.State.SUCCEEDED,
            progress=1.0,
            message="Done: version is a candidate",
            finished_at=timezone.now(),
            log=log.text,
        )
        if done != 1:
            # Taken over (e.g. reset as orphaned) or cancelled meanwhile: the
            # other owner decides this version's fate.
            raise _Cancelled()
        _set_status(version, ModelVersion.Status.CANDIDATE, actor=job.requested_by)
        audit_record(
            actor=job.requested_by,
            action="training.succeeded",
            project=job.project,
            target=job,
            after={"version": version.number, "refit": report.refitted, "reused": report.reused},
        )
        # The regression test runs as its own task once the candidate is visible.
        transaction.on_commit(partial(regression_queue_after_training, version.pk))


def snapshot_train_frame(snapshot, split="train"):
    """The snapshot's rows of ``split`` as (frame indexed by external id, labels),
    with each sample's data as it was at the snapshotted revision."""
    rows = list(
        SnapshotRow.objects.filter(snapshot=snapshot, split=split)
        .order_by("sample__external_id")
        .values_list(
            "sample_id",
            "sample__external_id",
            "revision",
            "sample__revision",
            "label__name",
            "sample__data",
        )
    )
    # A sample corrected after the snapshot: its snapshotted data is a
    # SampleRevision (revision 0, as imported, is stored as revision 1).
    older = {(sid, max(rev, 1)) for sid, _, rev, current, _, _ in rows if rev != current}
    old_data = {}
    if older:
        sample_ids = {sid for sid, _ in older}
        for sid, number, data in SampleRevision.objects.filter(
            sample_id__in=sample_ids
        ).values_list("sample_id", "number", "data"):
            if (sid, number) in older:
                old_data[(sid, number)] = data
    records, index, labels = [], [], []
    for sid, external_id, rev, current, label, data in rows:
        if rev != current:
            data = old_data[(sid, max(rev, 1))]
        records.append(data)
        index.append(external_id)
        labels.append(label)
    frame = pd.DataFrame.from_records(records, index=pd.Index(index, name="external_id"))
    return frame, np.asarray(labels, dtype=object)


def _check_holdout(snapshot, classes):
    holdout = (snapshot.class_counts or {}).get("holdout", {})
    train = (snapshot.class_counts or {}).get("train", {})
    missing = [c for c in classes if train.get(c) and not holdout.get(c)]
    if missing:
        raise TrainingError(
            f"no holdout samples for class(es) {missing}: the regression test could not "
            "measure them. Label more samples of those classes."
        )


def _build_submodel(entry, version):
    params = dict(entry.get("params") or {})
    if entry["name"] == "keyword_rules" and "rules" not in params:
        rule_set = version.rule_set
        params["rules"] = [_rule(r) for r in (rule_set.rules if rule_set else [])]
    return create(entry["name"], fields=entry["fields"], params=params, key=entry.get("key"))


def _rule(rule):
    # KeywordRuleSet rows name the class "label"; the sub-model calls it "class".
    rule = dict(rule)
    if "label" in rule and "class" not in rule:
        rule["class"] = rule.pop("label")
    return rule


def _reset_if_orphaned(job_id):
    cutoff = timezone.now() - stale_after()
    reset = TrainingJob.objects.filter(
        pk=job_id, state=TrainingJob.State.RUNNING, heartbeat_at__lt=cutoff
    ).update(state=TrainingJob.State.QUEUED, message="Re-running: the last worker stopped")
    if reset:
        job = TrainingJob.objects.select_related("project").get(pk=job_id)
        Artifact.objects.filter(version_id=job.version_id).delete()
        audit_record(actor=None, action="training.reset", project=job.project, target=job)


def _set_status(version, status, *, actor):
    before = version.status
    ModelVersion.objects.filter(pk=version.pk).update(status=status)
    version.status = status
    audit_record(
        actor=actor,
        action="model_version.status",
        project=version.project,
        target=version,
        before={"status": before},
        after={"status": status},
    )


def _finish_failed(job, *, message, error, actor, from_states):
    with transaction.atomic():
        done = TrainingJob.objects.filter(pk=job.pk, state__in=from_states).update(
            state=TrainingJob.State.FAILED,
            message=message[:255],
            error=error,
            finished_at=timezone.now(),
        )
        if done:
            _set_status(job.version, ModelVersion.Status.FAILED, actor=actor)
            _iteration_back_to_open(job.version)
            audit_record(
                actor=actor,
                action="training.failed",
                project=job.project,
                target=job,
                after={"message": message[:255]},
            )


def _finish_cancelled(job, *, actor, from_states):
    with transaction.atomic():
        done = TrainingJob.objects.filter(pk=job.pk, state__in=from_states).update(
            state=TrainingJob.State.CANCELLED,
            message="Cancelled",
            finished_at=timezone.now(),
        )
        if done:
            # A cancelled version is never promotable.
            _set_status(job.version, ModelVersion.Status.FAILED, actor=actor)
            _iteration_back_to_open(job.version)
            audit_record(actor=actor, action="training.cancelled", project=job.project, target=job)


def _iteration_back_to_open(version):
    from .iterations import iteration_training_finished  # imports this module

    iteration_training_finished(version)


def _one_line(error) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:255]


class _Log:
    """Progress, heartbeat and log lines of one attempt, each written in its
    own short statement so the page sees them while training runs."""

    def __init__(self, job):
        self.job_id = job.pk
        self.attempt = job.attempts
        self.lines = [line for line in (job.log or "").splitlines() if line]
        self.started = time.monotonic()
        self.write(f"Attempt {self.attempt} started")

    @property
    def text(self):
        return "\n".join(self.lines) + "\n"

    def write(self, line):
        self.lines.append(f"[{time.monotonic() - self.started:7.2f}s] {line}")
        TrainingJob.objects.filter(pk=self.job_id).update(
            log=self.text, heartbeat_at=timezone.now()
        )

    def step(self, fraction, message):
        self.check_cancel()
        self.lines.append(f"[{time.monotonic() - self.started:7.2f}s] {message}")
        TrainingJob.objects.filter(pk=self.job_id).update(
            progress=fraction, message=message[:255], log=self.text, heartbeat_at=timezone.now()
        )

    def check_cancel(self):
        if TrainingJob.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            raise _Cancelled()


class _Heartbeat(threading.Thread):
    """Refresh the job's heartbeat while this process is alive, even during
    one long fit; it stops when the process dies, which is the point."""

    def __init__(self, job_id, attempt):
        super().__init__(name=f"training-heartbeat-{job_id}", daemon=True)
        self.job_id, self.attempt = job_id, attempt
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.wait(heartbeat_seconds()):
                try:
                    TrainingJob.objects.filter(
                        pk=self.job_id, state=TrainingJob.State.RUNNING, attempts=self.attempt
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a missed beat is harmless; never kill the run
                    logger.warning("heartbeat of training job %s failed", self.job_id)
        finally:
            connection.close()  # this thread's own connection

    def stop(self):
        self.stopped.set()

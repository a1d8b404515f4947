"""Retraining on a real Celery worker process, and a worker killed mid-fit.

The worker is a separate ``celery worker`` process against the test database
(see tests/test_worker.py), on whatever broker this run uses: the embedded
filesystem broker, or Redis when ``REDIS_URL`` is set (CI runs both). Each
test gives it a queue of its own through ``LEANML_TRAINING_QUEUE``, and routes
this process's training and regression tasks there too, so no other worker
(a parallel test process, a ``make run`` on the same machine) takes its jobs.
The worker also gets short heartbeat and stale settings, so a dead worker's
job is noticed in seconds, not minutes.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import current_app
from django_celery_results.models import TaskResult

from iterations.models import Artifact, EnsembleConfig, Iteration, ModelVersion, TrainingJob
from iterations.services.artifacts import artifact_load, ensemble_load
from iterations.services.iterations import iteration_create, iteration_retrain
from iterations.services.training import snapshot_train_frame
from leanml_site.models import AuditEvent
from ml.submodels import register, unregister
from tests.test_worker import child_env

ROOT = Path(__file__).resolve().parent.parent.parent
HEARTBEAT_SECONDS = 1
STALE_SECONDS = 3
FINISHED = (TrainingJob.State.SUCCEEDED, TrainingJob.State.FAILED, TrainingJob.State.CANCELLED)
PROMOTABLE = (
    ModelVersion.Status.CANDIDATE,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.CANARY,
    ModelVersion.Status.PRODUCTION,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def media(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def queue():
    """A private queue; this process's training tasks are routed to it."""
    name = f"leanmltest{uuid.uuid4().hex[:12]}"
    conf, amqp = current_app.conf, current_app.amqp
    before = conf.task_routes
    conf.task_routes = {
        "iterations.training_run": {"queue": name},
        "iterations.regression_run": {"queue": name},
    }
    amqp.flush_routes()
    amqp.__dict__.pop("router", None)  # a cached property holding the old routes
    yield name
    conf.task_routes = before
    amqp.flush_routes()
    amqp.__dict__.pop("router", None)


@pytest.fixture
def held():
    """The held sub-model, registered here only while the test runs (the
    worker registers it by importing the module)."""
    from . import held_submodel

    register(held_submodel.HeldTfidf)
    yield held_submodel
    unregister(held_submodel.NAME)


class Workers:
    """Worker processes started by one test, each in its own process group."""

    def __init__(self, queue, media, log_dir):
        self.queue, self.media, self.log_dir = queue, media, log_dir
        self.processes = []

    def start(self):
        number = len(self.processes) + 1
        log = self.log_dir / f"worker{number}.log"
        env = child_env() | {
            "MEDIA_ROOT": str(self.media),
            "LEANML_TRAINING_QUEUE": self.queue,
            "LEANML_TRAINING_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "LEANML_TRAINING_STALE_SECONDS": str(STALE_SECONDS),
        }
        with log.open("w") as out:
            process = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "leanml_site",
                    "worker",
                    "-Q",
                    self.queue,
                    "-n",
                    f"{self.queue}-{number}@%h",
                    "--concurrency",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel",
                    "info",
                    "--include",
                    "tests.iterations.held_submodel",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill reaches the pool too
            )
        process.log = log
        self.processes.append(process)
        return process

    def kill(self, process):
        """SIGKILL the worker and its pool children at once: no warm
        shutdown, no message given back, as when a machine dies."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def logs(self):
        return "\n".join(f"--- {p.log.name}\n{p.log.read_text()}" for p in self.processes)

    def stop_all(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # a pool child left behind


@pytest.fixture
def workers(queue, media, tmp_path):
    started = Workers(queue, media, tmp_path)
    yield started
    started.stop_all()


def wait_until(condition, workers, seconds, what, poll=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(
        f"timed out after {seconds} s waiting for {what}; the workers' logs:\n{workers.logs()}"
    )


def open_iteration(reviews):
    return iteration_create(
        project=reviews.project,
        by=reviews.user,
        title="Retrain on a worker",
        hypothesis="The labelled reviews are enough to train a candidate.",
    )


def assert_loads_and_predicts(version):
    artifacts = list(version.artifacts.all())
    keys = {a.key for a in artifacts}
    assert keys == {*(m["key"] for m in version.ensemble.submodels), Artifact.COMBINER}
    for artifact in artifacts:
        artifact_load(artifact)  # checks the file's sha256 and its types
    holdout, labels = snapshot_train_frame(version.snapshot, split="holdout")
    proba = ensemble_load(version).predict_proba(holdout)
    assert proba.shape == (len(holdout), 2)
    assert abs(proba.sum(axis=1) - 1).max() < 1e-6
    # Better than always saying the commonest class: it learned something.
    predicted = ensemble_load(version).classes_[proba.argmax(axis=1)]
    majority = max((labels == c).mean() for c in set(labels))
    assert (predicted == labels).mean() > majority


def test_a_real_worker_retrains_an_iteration_end_to_end(reviews, workers, media):
    iteration = open_iteration(reviews)
    worker = workers.start()

    job = iteration_retrain(iteration=iteration, by=reviews.user)

    job = wait_until(
        lambda: TrainingJob.objects.filter(pk=job.pk, state__in=FINISHED).first(),
        workers,
        180,
        "the training job to finish",
    )
    assert job.state == TrainingJob.State.SUCCEEDED, f"{job.error}\n{workers.logs()}"
    assert (job.progress, job.attempts) == (1.0, 1)
    version = ModelVersion.objects.get(pk=job.version_id)
    assert version.status == ModelVersion.Status.CANDIDATE
    assert Iteration.objects.get(pk=iteration.pk).candidate == version
    assert_loads_and_predicts(version)
    assert all((media / a.file.name).is_file() for a in version.artifacts.all())
    # It ran in the worker process, not eagerly in this one.
    task = TaskResult.objects.get(task_id=job.celery_task_id)
    assert (task.status, task.task_name) == ("SUCCESS", "iterations.training_run")
    assert task.worker.startswith(f"{workers.queue}-1@")
    assert worker.poll() is None


def held_retrain(reviews, held, tmp_path, workers):
    """Start a worker and a retrain whose text sub-model waits in its fit
    until ``hold`` is removed; return (job, hold) once the fit has begun."""
    hold = tmp_path / "hold"
    hold.touch()
    fitting = tmp_path / "hold.fitting"
    EnsembleConfig.objects.create(
        project=reviews.project,
        number=2,
        submodels=[
            {
                "key": "text",
                "name": held.NAME,
                "fields": ["review"],
                "params": {"hold_file": str(hold)},
            },
            *[m for m in reviews.config.submodels if m["key"] == "fields"],
        ],
    )
    iteration = open_iteration(reviews)
    worker = workers.start()
    job = iteration_retrain(iteration=iteration, by=reviews.user)
    wait_until(fitting.exists, workers, 180, "the worker to start fitting")
    job.refresh_from_db()
    assert (job.state, job.attempts) == (TrainingJob.State.RUNNING, 1)
    return worker, job, hold


def wait_for_the_rerun(job, workers):
    """Wait until the job ends, checking all along that its version is never
    promotable unless the job succeeded."""
    seen = []

    def never_promotable_before_success():
        state, status = TrainingJob.objects.filter(pk=job.pk).values_list(
            "state", "version__status"
        )[0]
        seen.append((state, status))
        if status in PROMOTABLE:
            assert state == TrainingJob.State.SUCCEEDED, seen

    return wait_until(
        lambda: TrainingJob.objects.filter(pk=job.pk, state__in=FINISHED).first(),
        workers,
        180,
        "the job to run again",
        poll=never_promotable_before_success,
    )


def assert_run_again_cleanly(job, version, workers, media):
    assert job.state == TrainingJob.State.SUCCEEDED, f"{job.error}\n{workers.logs()}"
    assert job.attempts == 2
    assert "Attempt 2 started" in job.log
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.CANDIDATE
    assert AuditEvent.objects.filter(action="training.reset", target_id=str(job.pk)).exists()
    assert_loads_and_predicts(version)
    # Exactly one model per key: nothing of the killed attempt is left over.
    assert version.artifacts.count() == 3
    leftovers = [p for p in media.rglob("*") if p.is_file() and p.suffix != ".skops"]
    assert not leftovers


def test_a_worker_killed_mid_fit_leaves_nothing_promotable_and_the_job_runs_again(
    reviews, workers, media, held, tmp_path
):
    first, job, hold = held_retrain(reviews, held, tmp_path, workers)
    version = job.version

    workers.kill(first)

    # Dead for longer than the stale time: nobody finishes the job, and the
    # version it was training is not promotable.
    time.sleep(STALE_SECONDS + 1)
    job.refresh_from_db()
    version.refresh_from_db()
    assert job.state == TrainingJob.State.RUNNING
    assert version.status == ModelVersion.Status.TRAINING
    assert not version.artifacts.exists()
    assert Iteration.objects.get(pk=version.iteration_id).status == Iteration.Status.TRAINING

    # A worker starting afterwards takes the job up again.
    hold.unlink()  # the next attempt fits at once
    workers.start()
    job = wait_for_the_rerun(job, workers)

    assert_run_again_cleanly(job, version, workers, media)


def pool_children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def test_a_pool_process_killed_mid_fit_gives_the_job_back_and_it_runs_again(
    reviews, workers, media, held, tmp_path
):
    """The out-of-memory killer's way: the fitting process dies, the worker's
    main process lives on and gives the message back to the broker."""
    worker, job, hold = held_retrain(reviews, held, tmp_path, workers)
    version = job.version
    children = pool_children(worker.pid)
    assert len(children) == 1  # --concurrency 1: the one fitting

    os.kill(children[0], signal.SIGKILL)
    hold.unlink()
    job = wait_for_the_rerun(job, workers)

    assert_run_again_cleanly(job, version, workers, media)
    assert worker.poll() is None
    assert "WorkerLostError" in worker.log.read_text()

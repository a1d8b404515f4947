"""Iterations at scale: retraining with reuse, the regression test, and the
time from "retrain" to a report, on 100,000 labelled real reviews.

    .venv/bin/python bench/bench_iterations.py [--samples 100000] [--skip-worker]

SQLite in the benchmark's own var dir by default; PostgreSQL when
DATABASE_URL is set (an existing, empty database) or with --fresh-pg NAME. The
ensemble is the default one of the review project: TF-IDF + logistic
regression on the text ("text"), gradient boosting on the product
("fields") and the experts' keyword rules ("rules"), stacked.

(a) Retrain all three sub-models, then each one alone with the other two
    reused, in the same run (training_run in this process). Goal: one of
    three ≤ 0.5× all three.
(b) The regression test of the fifth version: candidate, production and
    three earlier versions re-scored on the 20,000-sample holdout, paired
    bootstrap (2,000 resamples), slices by source (4 values) and product
    (~5,000 values), a gain matrix. Goal:
    total < 10 s, bootstrap < 1 s. The bootstrap is also timed alone.
(c) "Retrain" to report ready through a real Celery worker on the training
    queue: request (snapshot, version, queueing), queue wait, the job's own
    steps (from its log), then the regression test queued after training.

The machine is shared: the load average is recorded beside the timings.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PYTHON,
    ROOT,
    bench_env,
    emit,
    manage,
    recreate_pg_database,
    setup_django,
)

RULES = [
    {"pattern": "waste of money", "label": "other", "weight": 2},
    {"pattern": "disappointed", "label": "other"},
    {"pattern": "stale", "label": "other"},
    {"pattern": "love", "label": "great"},
    {"pattern": "delicious", "label": "great"},
]
SOURCES = ["web", "app", "email", "phone"]
GAINS = {"great": {"great": 1.0, "other": -0.5}, "other": {"great": -3.0, "other": 0.2}}


def load():
    return round(os.getloadavg()[0], 2)


def train(project, by, refit=None, seed=0):
    """One version through the real path, in this process; the regression
    test training would queue is left out (timed on its own in (b))."""
    from iterations.services.training import training_request, training_run

    with mock.patch("iterations.services.training.regression_queue_after_training"):
        job = training_request(project=project, by=by, refit=refit, seed=seed, queue=False)
        start = time.perf_counter()
        job = training_run(job_id=job.pk)
        seconds = time.perf_counter() - start
    if job.state != "succeeded":
        raise SystemExit(f"training failed: {job.message}\n{job.error}")
    return job, seconds


def log_phases(log):
    """Seconds between the job's own log steps, and the per-sub-model fits."""
    stamps = [
        (float(m.group(1)), m.group(2))
        for m in re.finditer(r"^\[\s*([\d.]+)s\] (.*)$", log, flags=re.MULTILINE)
    ]

    def at(prefix):
        return next((t for t, text in stamps if text.startswith(prefix)), None)

    marks = {
        "load_snapshot_rows": (at("Loading the snapshot"), at("Preparing sub-models")),
        "load_reused_submodels": (at("Preparing sub-models"), at("Fitting")),
        "fit_and_combiner": (at("Fitting"), at("Writing artifacts")),
        "write_artifacts": (at("Writing artifacts"), at("Finishing")),
    }
    phases = {
        name: round(b - a, 3) for name, (a, b) in marks.items() if a is not None and b is not None
    }
    fits = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"Fitted '(\w+)' in ([\d.]+) s", log)
    }
    return phases, fits


def add_source(project):
    """A low-cardinality slice field ("source", 4 values) beside the
    product, which in these reviews is close to an id (~5,000 values)."""
    from labelling.models import Sample

    rows = list(project.samples.values_list("id", "data"))
    for start in range(0, len(rows), 5000):
        Sample.objects.bulk_update(
            [
                Sample(id=i, data={**data, "source": SOURCES[i % len(SOURCES)]})
                for i, data in rows[start : start + 5000]
            ],
            ["data"],
        )


def part_a(project, by):
    from iterations.models import Artifact

    result = {"load_average_before": load()}
    job1, first = train(project, by)
    result["first_fit_all_three_s"] = round(first, 2)
    job2, all_three = train(project, by, seed=1)
    result["retrain_all_three_s"] = round(all_three, 2)
    result["all_three_fits_s"] = log_phases(job2.log)[1]
    ones = {}
    for key in ("rules", "text", "fields"):
        job, seconds = train(project, by, refit=[key], seed=2)
        reused = sorted(
            Artifact.objects.filter(version=job.version, source__isnull=False).values_list(
                "key", flat=True
            )
        )
        ones[key] = {
            "seconds": round(seconds, 2),
            "ratio_vs_all_three": round(seconds / all_three, 3),
            "reused": reused,
            "fits_s": log_phases(job.log)[1],
        }
    result["retrain_one_of_three"] = ones
    result["load_average_after"] = load()
    result["goal_ratio"] = "<= 0.5"
    return emit("iterations_retrain", result), job1.version


def part_b(project, production):
    import numpy as np

    from iterations.models import ModelSettings, ModelVersion
    from iterations.services.regression import Holdout, regression_run
    from ml.stats import paired_comparison

    ModelVersion.objects.filter(pk=production.pk).update(status="production")
    ModelSettings.objects.update_or_create(
        project=project,
        defaults={
            "slice_fields": ["source", "product"],
            "gain_matrix": GAINS,
            "useful_baseline": 0.0,
            "compare_last": 3,
        },
    )
    candidate = project.model_versions.order_by("-number").first()
    runs = []
    # The second run computes everything again and, the evidence being the
    # same, returns the report the first wrote (its timings are the first's).
    for _ in range(2):
        before = load()
        start = time.perf_counter()
        report = regression_run(version_id=candidate.pk)
        wall = time.perf_counter() - start
        payload = report.payload
        runs.append(
            {
                "wall_s": round(wall, 3),
                "timings": payload["timings"],
                "load_average": before,
            }
        )
    holdout = Holdout(project)
    versions = payload["versions"]
    distinct = len(
        {
            a.sha256
            for v in project.model_versions.filter(number__in=[e["number"] for e in versions])
            for a in v.artifacts.exclude(key="__combiner__")
        }
    )
    labels = holdout.labels
    rng = np.random.default_rng(0)
    pred_a = np.where(rng.random(len(labels)) < 0.85, labels, "other")
    pred_b = np.where(rng.random(len(labels)) < 0.87, labels, "great")
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        paired_comparison(
            labels,
            pred_a,
            pred_b,
            ["great", "other"],
            metrics=["accuracy", "macro_f1", "value_per_1000"],
            gain_matrix=GAINS,
            n_resamples=2000,
            seed=0,
        )
        timings.append(time.perf_counter() - start)
    return emit(
        "iterations_regression",
        {
            "holdout": len(holdout),
            "versions": [(e["number"], e["role"], e["error"]) for e in versions],
            "distinct_submodel_artifacts_scored": distinct,
            "runs": runs,
            "bootstrap_alone_s": [round(t, 3) for t in timings],
            "gates_passed": payload["gates"]["passed"],
            "slices_per_version": {k: len(v) for k, v in versions[0]["slices"].items()},
            "payload_bytes": len(json.dumps(payload)),
            "accuracy": {e["number"]: round(e["metrics"]["accuracy"], 4) for e in versions},
            "load_average_after": load(),
            "goal": "total < 10 s, bootstrap < 1 s",
        },
    )


def part_c(project, by, env, var_dir):
    from iterations.models import RegressionReport
    from iterations.services.training import training_request

    log_path = var_dir / "worker.log"
    worker = subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "leanml_site", "worker", "-Q", "training"]
        + ["-c", "1", "--loglevel", "info", "--without-mingle", "--without-gossip"],
        env=env,
        cwd=ROOT,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "ready." not in log_path.read_text():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(2)  # let the worker_ready hook finish its look for orphaned jobs
        before = load()
        start = time.perf_counter()
        job = training_request(project=project, by=by, seed=7)
        request_s = time.perf_counter() - start
        while True:
            report = RegressionReport.objects.filter(candidate_id=job.version_id).first()
            if report is not None:
                break
            job.refresh_from_db()
            if job.state in ("failed", "cancelled"):
                raise SystemExit(f"training {job.state}: {job.message}\n{job.error}")
            if time.perf_counter() - start > 1800:
                raise SystemExit("no report after 30 minutes")
            time.sleep(0.2)
        ready_s = time.perf_counter() - start
        job.refresh_from_db()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    phases, fits = log_phases(job.log)
    payload = report.payload
    return emit(
        "iterations_retrain_to_report",
        {
            "click_to_report_ready_s": round(ready_s, 2),
            "breakdown_s": {
                "request_snapshot_version_queue": round(request_s, 3),
                "training_queue_wait": round((job.started_at - job.created_at).total_seconds(), 3),
                "training_job": round((job.finished_at - job.started_at).total_seconds(), 3),
                "training_steps": phases,
                "fit_per_submodel": fits,
                "regression_queue_wait_and_run": round(
                    (report.created_at - job.finished_at).total_seconds(), 3
                ),
                "regression": payload["timings"],
            },
            "load_average_before": before,
            "load_average_after": load(),
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--skip-worker", action="store_true", help="Leave out part (c).")
    parser.add_argument(
        "--fresh-pg",
        metavar="NAME",
        default="",
        help="Drop and create PostgreSQL database NAME (on BENCH_PG_ADMIN_URL's server) and use it.",
    )
    args = parser.parse_args()
    if args.fresh_pg:
        os.environ["DATABASE_URL"] = recreate_pg_database(args.fresh_pg)

    var_dir = Path(os.environ.get("BENCH_VAR_DIR", "/tmp/bench-iterations"))
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)
    database_url = os.environ.get("DATABASE_URL", "")
    env = bench_env(database_url, var_dir)
    if not database_url:
        env.pop("REDIS_URL", None)  # SQLite runs use the filesystem broker in the var dir
    manage("migrate", "--verbosity", "0", env=env)
    setup_django(env)

    from django.db import connection

    from bench.seed import seed_project
    from iterations.models import KeywordRuleSet

    start = time.perf_counter()
    project, _ = seed_project(n_samples=args.samples, n_annotators=0, labelled=args.samples)
    add_source(project)
    by = project.memberships.get(role="owner").user
    KeywordRuleSet.objects.create(project=project, number=1, rules=RULES, created_by=by)
    setting = {
        "database": connection.vendor,
        "broker": "redis" if env.get("REDIS_URL") else "filesystem",
        "samples": args.samples,
        "holdout": project.samples.filter(split="holdout").count(),
        "seed_s": round(time.perf_counter() - start, 1),
        "cpus": os.cpu_count(),
    }
    emit("iterations_setup", setting)
    _, first = part_a(project, by)
    part_b(project, first)
    if not args.skip_worker:
        part_c(project, by, env, var_dir)


if __name__ == "__main__":
    main()

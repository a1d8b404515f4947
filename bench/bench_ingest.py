"""1,000,000 prediction logs through the bulk API, beside PostgreSQL's own COPY.

    .venv/bin/python bench/bench_ingest.py [--rows 1000000] [--batch 100000] [--streams 1]

Real HTTP: gunicorn (production settings, sync workers, as README
recommends) on loopback, 10 POSTs of 100,000 rows as a JSON list with an
API key: one after another, or ``--streams N`` at a time (a client with N
connections, and N gunicorn workers), as a product's log shipper with
several senders would. The baseline is PostgreSQL's COPY of the
same rows (same columns and types, CSV) into a plain table, in the same
run. Goal (issue 4): at least a third of COPY's speed; peak RSS of the web
process under 1 GB (read from the worker's /proc VmHWM).
"""

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    bench_env,
    emit,
    gunicorn,
    manage,
    recreate_pg_database,
    reviews_frame,
)

CLASSES = ["great", "other"]
COUNTRIES = ["DE", "FR", "US", "GB", "ES"]

SETUP = """
from django.contrib.auth.models import User
from iterations.models import DatasetSnapshot, EnsembleConfig, ModelVersion
from labelling.services.projects import project_create
from monitoring.services.api_keys import api_key_create
u = User.objects.create_user('bench-owner')
p = project_create(by=u, name='ingest bench', label_classes=['great', 'other'],
    fields=[{'name': 'review', 'kind': 'text', 'shown': True},
            {'name': 'product', 'kind': 'category', 'shown': True}])
s = DatasetSnapshot.objects.create(project=p, content_hash='0' * 64, row_count=0)
e = EnsembleConfig.objects.create(project=p, number=1, submodels=[])
ModelVersion.objects.create(project=p, number=1, snapshot=s, ensemble=e, status='production')
_key, full = api_key_create(project=p, by=u, name='bench', scopes=['ingest'])
print(p.pk, full)
"""


def make_rows(start, count, reviews, products, rng):
    """``count`` prediction logs of real reviews, request ids start..start+count."""
    picks = rng.integers(0, len(reviews), size=count)
    great = np.round(rng.random(count), 4)
    latency = np.round(rng.gamma(2.0, 6.0, size=count), 2)
    countries = rng.integers(0, len(COUNTRIES), size=count)
    base = 1_772_323_200  # 2026-03-01T00:00:00Z; one prediction every 2 s
    rows = []
    for k in range(count):
        i = start + k
        p = float(great[k])
        rows.append(
            {
                "request_id": f"req-{i}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 2 * i)),
                "model_version": 1,
                "data": {"review": reviews[picks[k]], "product": products[picks[k]]},
                "predicted": "great" if p >= 0.5 else "other",
                "probabilities": {"great": p, "other": round(1 - p, 4)},
                "latency_ms": float(latency[k]),
                "segment": {"country": COUNTRIES[countries[k]]},
            }
        )
    return rows


def copy_baseline(database_url, csv_path):
    """PostgreSQL's COPY of the same rows into a plain table (no LeanML)."""
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://")) as conn:
        conn.execute(
            "CREATE TABLE copy_baseline (request_id text, timestamp timestamptz,"
            " model_version int8, data jsonb, predicted text, probabilities jsonb,"
            " confidence float8, latency_ms float8, segment jsonb)"
        )
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            open(csv_path, "rb") as handle,
            cursor.copy("COPY copy_baseline FROM STDIN WITH (FORMAT csv)") as copy,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - started
        rows = conn.execute("SELECT count(*) FROM copy_baseline").fetchone()[0]
    return elapsed, rows


def copy_indexed(database_url, csv_path, project_id):
    """The same COPY into a copy of the log table with its indexes and
    constraints (no foreign keys): what storing these rows costs PostgreSQL
    alone, before any parsing or checking."""
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://")) as conn:
        conn.execute("CREATE TABLE copy_indexed (LIKE monitoring_predictionlog INCLUDING ALL)")
        conn.execute(f"ALTER TABLE copy_indexed ALTER project_id SET DEFAULT {int(project_id)}")
        conn.execute("ALTER TABLE copy_indexed ALTER received_at SET DEFAULT now()")
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            open(csv_path, "rb") as handle,
            cursor.copy(
                "COPY copy_indexed (request_id, timestamp, model_version_id, data, predicted,"
                " probabilities, confidence, latency_ms, segment) FROM STDIN WITH (FORMAT csv)"
            ) as copy,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE copy_indexed")
        conn.commit()
    return elapsed


def write_copy_rows(writer, rows):
    for r in rows:
        writer.writerow(
            [
                r["request_id"],
                r["timestamp"],
                r["model_version"],
                json.dumps(r["data"], ensure_ascii=False),
                r["predicted"],
                json.dumps(r["probabilities"]),
                max(r["probabilities"].values()),
                r["latency_ms"],
                json.dumps(r["segment"]),
            ]
        )


def worker_peak_mb(port):
    """Peak RSS (VmHWM) of the gunicorn processes bound to ``port``: master and worker."""
    peaks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "gunicorn" not in cmdline or f"127.0.0.1:{port}" not in cmdline:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[int(entry.name)] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return peaks


def post(url, body, key):
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Api-Key {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1, help="requests in flight at once")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work):
    frame = reviews_frame()
    reviews = frame["review"].astype(str).tolist()
    products = frame["product"].astype(str).tolist()
    rng = np.random.default_rng(0)
    copy_csv = work / "copy.csv"
    bodies = []
    # One batch in memory at a time: its JSON body and its rows for COPY.
    with open(copy_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for i, start in enumerate(range(0, args.rows, args.batch)):
            rows = make_rows(start, min(args.batch, args.rows - start), reviews, products, rng)
            path = work / f"batch-{i}.json"
            path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
            bodies.append(path)
            write_copy_rows(writer, rows)
    body_mb = sum(p.stat().st_size for p in bodies) / 2**20

    database_url = recreate_pg_database("leanml_bench_ingest")
    env = bench_env(
        database_url,
        work / "var",
        production=True,
        # One request carries 100,000 rows: gunicorn's default 30 s timeout
        # would kill a worker slowed by a loaded machine.
        GUNICORN_CMD_ARGS="--timeout 600",
    )
    manage("migrate", "-v0", env=env)
    out = manage("shell", "-c", SETUP, env=env, capture=True).stdout.strip().splitlines()[-1]
    project_id, key = out.split()

    load_before = os.getloadavg()
    copy_seconds, copy_rows = copy_baseline(database_url, copy_csv)
    indexed_seconds = copy_indexed(database_url, copy_csv, project_id)

    with gunicorn(env, workers=args.streams, threads=1, worker_class="sync") as base:
        port = base.rsplit(":", 1)[1]
        url = f"{base}/api/v1/projects/{project_id}/predictions/"

        def send(path):
            body = path.read_bytes()
            t0 = time.perf_counter()
            status, answer = post(url, body, key)
            seconds = time.perf_counter() - t0
            if status != 200:
                raise SystemExit(f"HTTP {status}: {answer}")
            print(f"{path.name}: {answer} in {seconds:.2f} s", flush=True)
            return seconds

        started = time.perf_counter()
        with ThreadPoolExecutor(args.streams) as pool:
            times = list(pool.map(send, bodies))
        api_seconds = time.perf_counter() - started
        # The idempotent path: the first batch again, nothing new to store.
        t0 = time.perf_counter()
        status, again = post(url, bodies[0].read_bytes(), key)
        resend_seconds = time.perf_counter() - t0
        peaks = worker_peak_mb(port)
    load_after = os.getloadavg()
    count = (
        manage(
            "shell",
            "-c",
            "from monitoring.models import PredictionLog;"
            f"print(PredictionLog.objects.filter(project_id={project_id}).count())",
            env=env,
            capture=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    emit(
        "ingest",
        {
            "rows": args.rows,
            "requests": len(bodies),
            "rows_per_request": args.batch,
            "transport": f"HTTP to gunicorn, {args.streams} sync worker(s), production settings,"
            " API key",
            "streams": args.streams,
            "json_body_mb": round(body_mb, 1),
            "copy_s": round(copy_seconds, 2),
            "copy_rows": copy_rows,
            "copy_into_indexed_log_table_s": round(indexed_seconds, 2),
            "api_s": round(api_seconds, 2),
            "api_rows": int(count),
            "request_s": [round(t, 2) for t in times],
            "rows_per_s": round(args.rows / api_seconds),
            "speed_vs_copy": round(copy_seconds / api_seconds, 3),
            "speed_vs_indexed_copy": round(indexed_seconds / api_seconds, 3),
            "goal_speed_vs_copy": ">= 0.333",
            "resend_first_batch": {
                "status": status,
                "answer": again,
                "s": round(resend_seconds, 2),
            },
            "peak_rss_mb_gunicorn": {str(k): round(v) for k, v in peaks.items()},
            "goal_peak_mb": "< 1024",
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
        },
    )


if __name__ == "__main__":
    main()

""" "Next sample + submit label" under 1, 8 and 32 concurrent annotators.

    .venv/bin/python bench/bench_queue.py [--db postgres|sqlite] [--samples 1000000]

Real HTTP against gunicorn, each client thread a different annotator with its
own API token, beside the project's cheapest endpoint (/healthz/) at the same
concurrency in the same run. Afterwards the database is checked for double
assignments (a sample labelled by more annotators than the overlap) and lost
labels (a 201 that left no row).

Goal (issue 2): p99 of a loop at 32 annotators at most 3x the cheapest
endpoint's p99; zero double assignments, on PostgreSQL and on SQLite.
"""

import argparse
import http.client
import json
import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PYTHON,
    ROOT,
    bench_env,
    emit,
    gunicorn,
    manage,
    percentiles,
    recreate_pg_database,
)


def seed(env, samples, annotators, overlap):
    script = (
        "import json\n"
        "from bench.seed import seed_project\n"
        f"project, users = seed_project(n_samples={samples}, n_annotators={annotators},"
        f" overlap={overlap})\n"
        "print(json.dumps({'project': project.pk, 'tokens': [t for _, t in users]}))\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", "import django; django.setup()\n" + script],
        env=env,
        cwd=ROOT,
        check=True,
        text=True,
        capture_output=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _client(args):
    """One client process: threads, each one annotator looping next -> submit."""
    host, port, project, tokens, seconds, mode = args
    results = {"loops": [], "errors": 0, "submitted": 0, "empty": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(token):
        conn = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        loops, errors, submitted, empty = [], 0, 0, 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                if mode == "healthz":
                    conn.request("GET", "/healthz/")
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                else:
                    conn.request(
                        "POST",
                        f"/api/v1/projects/{project}/queue/next/",
                        body="{}",
                        headers=headers,
                    )
                    response = conn.getresponse()
                    body = response.read()
                    if response.status == 204:
                        empty += 1
                        break
                    sample = json.loads(body)["sample"]["id"]
                    label = "great" if sample % 3 else "other"
                    payload = json.dumps({"sample": sample, "label": label, "seconds": 1.5})
                    conn.request(
                        "POST",
                        f"/api/v1/projects/{project}/queue/submit/",
                        body=payload,
                        headers=headers,
                    )
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 201
                    submitted += ok
            except (OSError, http.client.HTTPException, KeyError, ValueError):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            if ok:
                loops.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1
        with lock:
            results["loops"] += loops
            results["errors"] += errors
            results["submitted"] += submitted
            results["empty"] += empty

    threads = [threading.Thread(target=run, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def load(base_url, project, tokens, seconds, mode):
    host, port = base_url.removeprefix("http://").split(":")
    processes = min(len(tokens), 4)
    groups = [tokens[i::processes] for i in range(processes)]
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_client, [(host, int(port), project, g, seconds, mode) for g in groups])
    elapsed = time.monotonic() - started
    loops = [ms for part in parts for ms in part["loops"]]
    return {
        **percentiles(loops),
        "per_s": round(len(loops) / seconds, 1),
        "errors": sum(p["errors"] for p in parts),
        "submitted": sum(p["submitted"] for p in parts),
        "wall_s": round(elapsed, 1),
    }


def integrity(env, project):
    script = (
        "import json\n"
        "from django.db.models import Count\n"
        "from labelling.models import Annotation, Project\n"
        f"p = Project.objects.get(pk={project})\n"
        "per_sample = (Annotation.objects.filter(project=p, origin='human')"
        ".values('sample').annotate(n=Count('annotator', distinct=True)))\n"
        "over = per_sample.filter(n__gt=p.overlap).count()\n"
        "rows = Annotation.objects.filter(project=p, origin='human').count()\n"
        "print(json.dumps({'double_assigned': over, 'label_rows': rows}))\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", "import django; django.setup()\n" + script],
        env=env,
        cwd=ROOT,
        check=True,
        text=True,
        capture_output=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--overlap", type=int, default=1)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    database_url = recreate_pg_database("leanml_bench_queue") if args.db == "postgres" else None
    env = bench_env(database_url, work / "var")
    manage("migrate", "-v0", env=env)
    started = time.monotonic()
    seeded = seed(env, args.samples, max(levels), args.overlap)
    seed_s = time.monotonic() - started
    project, tokens = seeded["project"], seeded["tokens"]
    submitted = 0
    with gunicorn(env) as base_url:
        for level in levels:
            cheapest = load(base_url, project, tokens[:level], args.seconds, "healthz")
            loop = load(base_url, project, tokens[:level], args.seconds, "queue")
            submitted += loop["submitted"]
            emit(
                "queue",
                {
                    "db": args.db,
                    "samples": args.samples,
                    "overlap": args.overlap,
                    "annotators": level,
                    "seconds": args.seconds,
                    "next_submit": loop,
                    "healthz": cheapest,
                    "p99_ratio": round(loop["p99_ms"] / cheapest["p99_ms"], 2),
                    "goal_p99_ratio_at_32": "<= 3",
                },
            )
    check = integrity(env, project)
    emit(
        "queue_integrity",
        {
            "db": args.db,
            "seed_s": round(seed_s, 1),
            "submitted_201": submitted,
            **check,
            "lost_labels": submitted - check["label_rows"],
        },
    )


if __name__ == "__main__":
    main()

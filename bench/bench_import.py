"""Import of a 1,000,000-row CSV, beside PostgreSQL's own COPY of the same file.

    .venv/bin/python bench/bench_import.py [--rows 1000000]

Goal (issue 2): LeanML's import at least a third of COPY's speed, peak memory
of the importing process under 1.5 GB.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PYTHON,
    ROOT,
    bench_env,
    emit,
    manage,
    recreate_pg_database,
    write_reviews_csv,
)


def copy_baseline(database_url, csv_path):
    """PostgreSQL's COPY of the same file into a plain table (no LeanML)."""
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://")) as conn:
        conn.execute("CREATE TABLE copy_baseline (id text, review text, product text)")
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            open(csv_path, "rb") as handle,
            cursor.copy("COPY copy_baseline FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - started
        rows = conn.execute("SELECT count(*) FROM copy_baseline").fetchone()[0]
    return elapsed, rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a 1,000,000-row CSV is ~420 MB


def run(args, work):
    csv_path = write_reviews_csv(work / "reviews.csv", args.rows)
    size_mb = csv_path.stat().st_size / 2**20
    database_url = recreate_pg_database("leanml_bench_import")
    env = bench_env(database_url, work / "var", LEANML_MAX_UPLOAD_MB=2048)
    manage("migrate", "-v0", env=env)
    setup = (
        "from django.contrib.auth.models import User\n"
        "from labelling.services.projects import project_create\n"
        "u = User.objects.create_user('bench-owner')\n"
        "p = project_create(by=u, name='import bench', label_classes=['great', 'other'],"
        " fields=[{'name': 'review', 'kind': 'text', 'shown': True},"
        " {'name': 'product', 'kind': 'category', 'shown': True}])\n"
        "print(p.pk)\n"
    )
    project_id = manage("shell", "-c", setup, env=env, capture=True).stdout.strip().splitlines()[-1]

    load_before = os.getloadavg()[0]  # other benchmarks may share the machine
    copy_seconds, copy_rows = copy_baseline(database_url, csv_path)

    started = time.perf_counter()
    subprocess.run(
        [
            PYTHON,
            str(ROOT / "manage.py"),
            "import_samples",
            project_id,
            str(csv_path),
            "--user",
            "bench-owner",
            "--id-column",
            "id",
        ],
        env={**env, "LOG_LEVEL": "INFO"},  # its log says how long each phase took
        cwd=ROOT,
        check=True,
    )
    import_seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    count = (
        manage(
            "shell",
            "-c",
            f"from labelling.models import Sample; print(Sample.objects.filter(project_id={project_id}).count())",
            env=env,
            capture=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    emit(
        "import",
        {
            "rows": args.rows,
            "file_mb": round(size_mb, 1),
            "copy_s": round(copy_seconds, 2),
            "copy_rows": copy_rows,
            "leanml_s": round(import_seconds, 2),
            "leanml_rows": int(count),
            "rows_per_s": round(args.rows / import_seconds),
            "speed_vs_copy": round(copy_seconds / import_seconds, 3),
            "goal_speed_vs_copy": ">= 0.333",
            "peak_rss_mb_largest_child": round(peak_mb),
            "goal_peak_mb": "< 1536",
            "load_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
    )


if __name__ == "__main__":
    main()

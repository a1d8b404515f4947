"""Export of 100,000 labelled samples (CSV, JSONL) and the samples browser's
first and 1000th page filtered by label, in a database of 1,000,000 samples.

    .venv/bin/python bench/bench_export_browse.py [--db postgres|sqlite]

Server time: each request goes through Django's whole stack in-process (URL
routing, middleware, session, permissions, queries, template or streaming),
timed from request to last byte; no network in between.

Goals (issue 2): each export under 5 s; each browser page under 50 ms.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, ROOT, bench_env, emit, manage, recreate_pg_database  # noqa: E402

MEASURE = r"""
import json, re, statistics, time
from urllib.parse import urljoin
from django.contrib.auth import get_user_model
from django.test import Client
from bench.seed import seed_project
from labelling.models import Membership

def seed(n, labelled):
    t = time.monotonic()
    project, _ = seed_project(n_samples=n, n_annotators=0, labelled=labelled, queued=0)
    return project, time.monotonic() - t

export_project, export_seed = seed(EXPORT_N, EXPORT_N)
browse_project, browse_seed = seed(BROWSE_N, BROWSE_LABELLED)
owner = get_user_model().objects.get(username="bench-owner")
client = Client()
client.force_login(owner)
out = {"seed_s": round(export_seed + browse_seed, 1)}

for fmt in ("csv", "jsonl"):
    times = []
    for _ in range(3):
        t = time.perf_counter()
        response = client.get(f"/projects/{export_project.pk}/export/?format={fmt}")
        size = sum(len(chunk) for chunk in response.streaming_content)
        times.append(time.perf_counter() - t)
        assert response.status_code == 200, response.status_code
    out[f"export_{fmt}"] = {"rows": EXPORT_N, "mb": round(size / 2**20, 1),
                            "best_s": round(min(times), 2), "median_s": round(statistics.median(times), 2)}

great = browse_project.label_classes.get(name="great")
url = f"/projects/{browse_project.pk}/samples/?label={great.pk}"
def timed(u, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        response = client.get(u)
        times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200
    return response, times
response, first = timed(url)
# Walk 999 "next page" links, as a user would, to reach the 1000th page.
page_url, page_number = url, 1
while page_number < 1000:
    body = client.get(page_url).content.decode()
    match = re.search(r'href="([^"]*after=\d+[^"]*)"', body)
    if match is None:  # fewer pages than that (a scaled-down run)
        break
    page_url = urljoin(page_url, match.group(1).replace("&amp;", "&"))
    page_number += 1
response, thousandth = timed(page_url)
rows = response.content.decode().count("<tr") - 1
out["browse_first_page_ms"] = {"median": round(statistics.median(first), 1), "max": round(max(first), 1)}
out["browse_1000th_page_ms"] = {"median": round(statistics.median(thousandth), 1), "max": round(max(thousandth), 1),
                                "url": page_url, "page": page_number, "rows_on_page": rows}
print("RESULT " + json.dumps(out))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink for a quick check")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    database_url = recreate_pg_database("leanml_bench_export") if args.db == "postgres" else None
    env = bench_env(database_url, work / "var")
    manage("migrate", "-v0", env=env)
    sizes = (
        f"EXPORT_N = {int(100_000 * args.scale)}\n"
        f"BROWSE_N = {int(1_000_000 * args.scale)}\n"
        f"BROWSE_LABELLED = {int(200_000 * args.scale)}\n"
    )
    proc = subprocess.run(
        [PYTHON, "-c", "import django; django.setup()\n" + sizes + MEASURE],
        env=env,
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    emit(
        "export_browse",
        {
            "db": args.db,
            **json.loads(line[len("RESULT ") :]),
            "goal_export_s": "< 5",
            "goal_page_ms": "< 50",
        },
    )


if __name__ == "__main__":
    main()

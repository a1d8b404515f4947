""" "Next sample + submit label" under 1, 8 and 32 concurrent annotators.

    .venv/bin/python bench/bench_queue.py [--db postgres|sqlite] [--samples 1000000]

Real HTTP against gunicorn (production settings, sync workers: see
bench/README.md), each client thread a different annotator with its own API
token, beside the project's cheapest endpoint (/healthz/) at the same
concurrency in the same run, in alternating windows. Afterwards the database
is checked for double assignments (a sample labelled by more annotators than
the overlap) and lost labels (a 201 that left no row), and the same clients
are run against a WSGI app that does nothing, to show they are not the limit.

A loop is one label: ``next_submit`` is two requests (POST queue/next/, then
queue/submit/ with the sample it got), ``submit_next`` one (POST
queue/submit-next/ with the sample the previous answer handed out; a
client's first sample comes from next, unmeasured). ``--loops`` picks
either or both (default both, in alternating windows with /healthz/).

Goal (issue 2): p99 of a loop at 32 annotators at most 3x the cheapest
endpoint's p99; zero double assignments, on PostgreSQL and on SQLite.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bench_env,
    django_json,  # noqa: E402
    emit,
    gunicorn,
    manage,
    percentiles,
    recreate_pg_database,
)

# What we recommend in production too (bench/README.md says why): sync
# workers, two per core plus one.
WORKERS, THREADS, WORKER_CLASS = 2 * (os.cpu_count() or 1) + 1, 1, "sync"
DATABASE = "leanml_bench_queue"
WARMUP_SECONDS = 3
# The label loops: two requests (next, then submit) or one (submit-next).
LOOPS = ("next_submit", "submit_next")


def seed(env, samples, annotators, overlap):
    script = (
        "import json\n"
        "from bench.seed import seed_project\n"
        f"project, users = seed_project(n_samples={samples}, n_annotators={annotators},"
        f" overlap={overlap})\n"
        "print(json.dumps({'project': project.pk, 'tokens': [t for _, t in users]}))\n"
    )
    return django_json(script, env=env)


def _client(args):
    """One client process: threads, each one annotator looping (``mode``)
    next -> submit (``next_submit``), or submit-next with the sample the
    previous answer handed out (``submit_next``), or GET /healthz/.

    Every process starts at the same wall-clock moment (``start_at``) so all
    annotators are busy for the whole measured window, and reports the CPU
    it used: the clients share the machine with the server.
    """
    host, port, project, tokens, seconds, mode, start_at = args
    results = {"loops": [], "errors": 0, "submitted": 0, "empty": 0}
    lock = threading.Lock()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_started = time.process_time()
    deadline = time.monotonic() + seconds

    def post(conn, path, payload, headers):
        conn.request(
            "POST", f"/api/v1/projects/{project}/queue/{path}/", body=payload, headers=headers
        )
        response = conn.getresponse()
        return response.status, response.read()

    def answer(sample):
        label = "great" if sample % 3 else "other"
        return json.dumps({"sample": sample, "label": label, "seconds": 1.5})

    def run(token):
        conn = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        loops, errors, submitted, empty = [], 0, 0, 0
        sample = None  # submit-next: the sample in hand (from next, then from each answer)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                if mode == "submit_next" and sample is None:
                    # Unmeasured: a script's first sample (or the one it still
                    # holds from the previous window) comes from next.
                    code, body = post(conn, "next", "{}", headers)
                    if code == 204:
                        empty += 1
                        break
                    sample = json.loads(body)["sample"]["id"]
                    continue
                if mode == "submit_next":
                    code, body = post(conn, "submit-next", answer(sample), headers)
                    ok = code == 201
                    submitted += ok
                    following = json.loads(body)["next"] if ok else None
                    sample = None if following is None else following["sample"]["id"]
                    if ok and following is None:
                        empty += 1
                elif mode == "healthz":
                    conn.request("GET", "/healthz/")
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                else:
                    # next_submit: the two-request loop.
                    code, body = post(conn, "next", "{}", headers)
                    if code == 204:
                        empty += 1
                        break
                    code, _ = post(
                        conn, "submit", answer(json.loads(body)["sample"]["id"]), headers
                    )
                    ok = code == 201
                    submitted += ok
            except (OSError, http.client.HTTPException, KeyError, ValueError, TypeError):
                ok, sample = False, None
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
    results["cpu_s"] = time.process_time() - cpu_started
    return results


def _busy_jiffies():
    """(busy, total, stolen) CPU time of the whole machine so far, from
    /proc/stat; stolen: time the hypervisor gave this machine's CPUs to
    someone else."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields), fields[7]


PG_BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum launcher")


def _cpu_by_role(port):
    """{pid: (role, CPU seconds so far)} of this benchmark's gunicorn and of
    PostgreSQL's backends on the benchmark's database plus its background
    writers (other databases' backends are someone else's work)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ours = DATABASE in command or any(name in command for name in PG_BACKGROUND)
        role = (
            "gunicorn"
            if "gunicorn" in command and f":{port}" in command
            else "postgres"
            if command.startswith("postgres") and ours
            else None
        )
        if role:
            fields = stat[stat.rindex(")") + 2 :].split()
            used[pid] = (role, (int(fields[11]) + int(fields[12])) / ticks)
    return used


def _role_deltas(before, after):
    """CPU seconds per role between two ``_cpu_by_role`` snapshots. A process
    that ended in between (a database connection closed after CONN_MAX_AGE)
    takes its last moments with it: a slight undercount, never negative."""
    used = {"gunicorn": 0.0, "postgres": 0.0}
    for pid, (role, seconds) in after.items():
        used[role] += seconds - before.get(pid, (role, 0.0))[1]
    return used


def _ready(_):
    """A first task for each pool process: it imports this module meanwhile."""
    time.sleep(0.2)


def _window(pool, groups, base_url, project, seconds, mode):
    """One measured window: every client process runs ``mode`` for ``seconds``."""
    host, port = base_url.removeprefix("http://").split(":")
    # A moment for the pool's processes to pick the work up, then a common start.
    start_at = time.time() + 0.5
    pending = pool.map_async(
        _client, [(host, int(port), project, g, seconds, mode, start_at) for g in groups]
    )
    time.sleep(max(0.0, start_at - time.time()))
    machine0, roles0 = _busy_jiffies(), _cpu_by_role(port)
    time.sleep(seconds)
    machine1, roles1 = _busy_jiffies(), _cpu_by_role(port)
    return {
        "parts": pending.get(),
        "seconds": seconds,
        "machine": [b - a for a, b in zip(machine0, machine1, strict=True)],
        "roles": _role_deltas(roles0, roles1),
    }


def _summary(windows, started):
    parts = [part for window in windows for part in window["parts"]]
    seconds = sum(window["seconds"] for window in windows)
    busy, total, stolen = (sum(w["machine"][i] for w in windows) for i in range(3))
    roles = {role: sum(w["roles"][role] for w in windows) for role in windows[0]["roles"]}
    loops = [ms for part in parts for ms in part["loops"]]
    busy_cores = os.cpu_count() * busy / max(1, total)
    stolen_cores = os.cpu_count() * stolen / max(1, total)
    client_cpu = sum(p["cpu_s"] for p in parts)
    return {
        **percentiles(loops),
        "per_s": round(len(loops) / seconds, 1),
        "errors": sum(p["errors"] for p in parts),
        "submitted": sum(p["submitted"] for p in parts),
        "wall_s": round(time.monotonic() - started, 1),
        # Whole machine (server, database, clients, and anything else
        # running) vs the clients alone, in cores busy over the windows.
        "machine_busy_cores": round(busy_cores, 2),
        "client_cores": round(client_cpu / seconds, 2),
        "stolen_cores": round(stolen_cores, 2),
        # Busy cores none of the above explains: other work on the machine.
        "other_cores": round(
            busy_cores - stolen_cores - (client_cpu + sum(roles.values())) / seconds, 2
        ),
        # CPU per loop (or per /healthz/ request), by who spent it.
        "cpu_ms_per_op": {
            "client": round(1000 * client_cpu / max(1, len(loops)), 2),
            **{role: round(1000 * used / max(1, len(loops)), 2) for role, used in roles.items()},
        },
    }


def measure(base_url, project, tokens, seconds, modes, *, rounds=1):
    """Run each of ``modes`` for ``seconds`` with one client thread per token,
    in ``rounds`` alternating windows (``seconds / rounds`` each), so that
    the cheapest endpoint and the loop see the same machine: this one's
    speed drifts by a fifth over minutes (other virtual machines, clocks)."""
    processes = min(len(tokens), 4)
    groups = [tokens[i::processes] for i in range(processes)]
    started = time.monotonic()
    windows = {mode: [] for mode in modes}
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_ready, range(processes), chunksize=1)
        for _ in range(rounds):
            for mode in modes:
                windows[mode].append(
                    _window(pool, groups, base_url, project, seconds / rounds, mode)
                )
    return {mode: _summary(windows[mode], started) for mode in modes}


# Rows every loop updates or deletes (leases come and go, queue items and
# samples get new row versions).
HOT_TABLES = ("labelling_lease", "labelling_queueitem", "labelling_sample")


def vacuum(database_url, *, analyze=False, tables=()):
    """What autovacuum does on a production server: this machine's PostgreSQL
    runs with autovacuum off (its CI configuration), so without this the
    planner would know nothing of a freshly seeded million rows and the lease
    table would carry every lease ever deleted from one level to the next."""
    if database_url is None:
        return
    import psycopg

    with psycopg.connect(
        database_url.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        command = "VACUUM (ANALYZE)" if analyze else "VACUUM"
        conn.execute(f"{command} {', '.join(tables)}")


TRIVIAL_APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "15")])
    return [b'{"status":"ok"}']
"""


def client_check(work, tokens, seconds, server):
    """How fast the client goes against a WSGI app that does nothing, under
    the same gunicorn settings: the clients share the machine with the
    server, and must not be what limits the loop."""
    (work / "trivial_app.py").write_text(TRIVIAL_APP)
    with gunicorn(
        bench_env(None, work / "var"),
        workers=server["workers"],
        threads=server["threads"],
        worker_class=server["worker_class"],
        app="trivial_app:application",
        cwd=work,
    ) as base_url:
        return measure(base_url, 0, tokens, seconds, ["healthz"])["healthz"]


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
    return django_json(script, env=env)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="alternate /healthz/ and the loop in this many windows per level",
    )
    parser.add_argument(
        "--loops",
        default="next_submit,submit_next",
        help="which label loops to measure beside /healthz/: next_submit (two requests: "
        "next, then submit) and/or submit_next (one request: submit-next)",
    )
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--worker-class", default=WORKER_CLASS)
    parser.add_argument(
        "--debug", action="store_true", help="run the server with DEBUG on (not production)"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    loops = [x for x in args.loops.split(",") if x]
    if not loops or set(loops) - set(LOOPS):
        parser.error(f"--loops: choose from {', '.join(LOOPS)}")
    work = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    database_url = recreate_pg_database(DATABASE) if args.db == "postgres" else None
    env = bench_env(database_url, work / "var", production=not args.debug)
    server = {
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": args.worker_class,
        "debug": args.debug,
    }
    manage("migrate", "-v0", env=env)
    started = time.monotonic()
    seeded = seed(env, args.samples, max(levels), args.overlap)
    seed_s = time.monotonic() - started
    project, tokens = seeded["project"], seeded["tokens"]
    vacuum(database_url, analyze=True)
    submitted = 0
    with gunicorn(
        env, workers=args.workers, threads=args.threads, worker_class=args.worker_class
    ) as base_url:
        # Unmeasured: a worker's first request imports the URLconf and with it
        # most of the project (about a second of CPU each), and connections,
        # prepared statements and caches fill. A server in production is warm.
        warm = measure(base_url, project, tokens, WARMUP_SECONDS, ["healthz", *loops])
        submitted += sum(warm[loop]["submitted"] for loop in loops)
        for level in levels:
            vacuum(database_url, tables=HOT_TABLES)
            measured = measure(
                base_url,
                project,
                tokens[:level],
                args.seconds,
                ["healthz", *loops],
                rounds=args.rounds,
            )
            cheapest = measured["healthz"]
            submitted += sum(measured[loop]["submitted"] for loop in loops)
            emit(
                "queue",
                {
                    "db": args.db,
                    "samples": args.samples,
                    "overlap": args.overlap,
                    "annotators": level,
                    "seconds": args.seconds,
                    **{loop: measured[loop] for loop in loops},
                    "healthz": cheapest,
                    "p99_ratio": {
                        loop: round(measured[loop]["p99_ms"] / cheapest["p99_ms"], 2)
                        for loop in loops
                    },
                    "goal_p99_ratio_at_32": "<= 3",
                    "server": server,
                },
            )
    trivial = client_check(work, tokens, min(args.seconds, 10), server)
    emit(
        "queue_client_check",
        {
            "db": args.db,
            "clients": len(tokens),
            "requests_per_s": trivial["per_s"],
            "p50_ms": trivial["p50_ms"],
            "p99_ms": trivial["p99_ms"],
            "client_cores": trivial["client_cores"],
            "server": server,
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

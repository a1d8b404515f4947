"""A real Celery worker process and ``manage.py serve``, against the test database.

The worker runs as a separate process on whatever broker this run is
configured with (the embedded filesystem broker, or Redis when ``REDIS_URL``
is set). It is pointed at the test database through ``DATABASE_URL``, and
each test listens on a queue of its own so that no other worker (a parallel
test process, a ``make run`` on the same machine) can take its jobs.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from leanml_site.tasks import ping

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def database_url_of_this_run():
    """The URL of the database this test run uses (not the configured default)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


def child_env():
    env = dict(os.environ, DATABASE_URL=database_url_of_this_run())
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    return env


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_real_worker_process_runs_ping(tmp_path):
    queue = f"leanmltest{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "leanml_site",
                "worker",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "info",
            ],
            cwd=ROOT,
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        result = ping.apply_async(queue=queue)
        try:
            value = result.get(timeout=90, interval=0.2)
        except Exception:
            pytest.fail(f"the worker did not answer; its log:\n{log.read_text()}")
    finally:
        stop(worker)

    assert value == "pong"
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == "SUCCESS"
    assert row.task_name == "leanml.ping"
    # The worker's own name: the job ran in that process, not eagerly in this one.
    assert row.worker.startswith(f"{queue}@")
    assert worker.returncode is not None
    assert "succeeded" in log.read_text()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local server)
        return response.status, response.read().decode()


def wait_for(url, process, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            return get(url)
        except OSError:
            time.sleep(0.3)
    return False


def start_serve(port, log, queue):
    command = ["manage.py", "serve", "--port", str(port), "--web-workers", "1", "--queues", queue]
    return subprocess.Popen(  # noqa: S603
        [sys.executable, *command],
        cwd=ROOT,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, to check nothing outlives it
    )


def group_is_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_serve_runs_web_and_worker_and_stops_both(tmp_path):
    port = free_port()
    queue = f"leanmltest{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        serve = start_serve(port, log, queue)
    try:
        answered = wait_for(f"http://127.0.0.1:{port}/login/", serve)
        assert answered, log_path.read_text()
        status, body = answered
        assert status == 200
        assert "Log in" in body
        # Static files are served by whitenoise under gunicorn.
        assert get(f"http://127.0.0.1:{port}/static/css/leanml.css")[0] == 200
        # Its worker takes jobs (from a queue of this test's own).
        result = ping.apply_async(queue=queue)
        try:
            assert result.get(timeout=60, interval=0.2) == "pong"
        except Exception:
            pytest.fail(f"serve's worker did not answer; its log:\n{log_path.read_text()}")
        assert TaskResult.objects.get(task_id=result.id).worker
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            raise

    assert serve.returncode == 0, log_path.read_text()
    deadline = time.monotonic() + 10
    while not group_is_gone(serve.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_is_gone(serve.pid), "a child of serve outlived it"
    assert "LeanML stopped." in log_path.read_text()


def test_serve_stops_the_worker_when_the_web_server_cannot_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log_path = tmp_path / "serve.log"
        with log_path.open("w") as log:
            serve = start_serve(port, log, f"leanmltest{uuid.uuid4().hex[:12]}")
        try:
            serve.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            raise

    assert serve.returncode != 0
    text = log_path.read_text()
    assert "web exited" in text
    deadline = time.monotonic() + 30
    while not group_is_gone(serve.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_is_gone(serve.pid), "the worker outlived the web server"

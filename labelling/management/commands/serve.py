"""Run LeanML on one machine: gunicorn for the web and a real Celery worker.

This is what ``make run`` starts. Both run as child processes in this
process's group, so a Ctrl-C in the terminal or a kill of the group reaches
them all; a SIGINT/SIGTERM sent to this process alone is forwarded. When
either child exits, the other is stopped too: a web server without its worker
would accept imports that never run.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

# Every queue a task of ours is routed to; production runs the same list.
WORKER_QUEUES = f"celery,{settings.LEANML_TRAINING_QUEUE}"
STOP_GRACE_SECONDS = 20


class Command(BaseCommand):
    help = "Start the web server (gunicorn) and a Celery worker, and stop both together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=3)
        parser.add_argument(
            "--worker-concurrency",
            type=int,
            default=1,
            help="Celery worker processes (1 keeps SQLite writes few).",
        )
        parser.add_argument(
            "--queues", default=WORKER_QUEUES, help=f"Queues the worker reads ({WORKER_QUEUES})."
        )
        parser.add_argument("--beat", action="store_true", help="Also run Celery beat.")
        parser.add_argument(
            "--no-worker", action="store_true", help="Web only (a worker runs elsewhere)."
        )

    def handle(
        self, *args, host, port, web_workers, worker_concurrency, queues, beat, no_worker, **_
    ):
        if settings.CELERY_TASK_ALWAYS_EAGER:
            self.stderr.write("Note: CELERY_TASK_ALWAYS_EAGER is on; jobs run inside the web.")
        if not settings.DEBUG:
            # With DEBUG off whitenoise serves only collected, hashed files.
            call_command("collectstatic", interactive=False, verbosity=0)

        python = sys.executable
        commands = {
            "web": [
                python,
                "-m",
                "gunicorn",
                "leanml_site.wsgi",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "--timeout",
                "120",
                "--graceful-timeout",
                str(STOP_GRACE_SECONDS - 5),
                "--access-logfile",
                "-",
                # Its default socket path is per user, so two servers on one
                # machine (a test beside `make run`) would fight over it.
                "--no-control-socket",
            ]
        }
        if not no_worker:
            commands["worker"] = [
                python,
                "-m",
                "celery",
                "-A",
                "leanml_site",
                "worker",
                "-Q",
                queues,
                "--concurrency",
                str(worker_concurrency),
                "--loglevel",
                "info",
                # One worker on one machine: no peers to sync with or gossip to.
                "--without-gossip",
                "--without-mingle",
            ]
        if beat:
            commands["beat"] = [
                python,
                "-m",
                "celery",
                "-A",
                "leanml_site",
                "beat",
                "--loglevel",
                "info",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
            ]

        stopping = False

        def on_signal(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

        children = {}
        for name, command in commands.items():
            children[name] = subprocess.Popen(command, cwd=settings.BASE_DIR)  # noqa: S603
            self.stdout.write(f"Started {name} (pid {children[name].pid}): {' '.join(command[1:])}")

        url = f"http://{host}:{port}/"
        ready = False
        exit_code = 0
        try:
            while not stopping:
                exited = [(n, p.returncode) for n, p in children.items() if p.poll() is not None]
                if exited:
                    name, code = exited[0]
                    self.stderr.write(f"{name} exited with status {code}; stopping the rest.")
                    exit_code = code or 1
                    break
                if not ready and _answers(url + "healthz/"):
                    ready = True
                    self._banner(url)
                time.sleep(0.5)
        finally:
            _stop(children)
        if exit_code:
            raise CommandError(f"LeanML stopped because a process exited (status {exit_code}).")
        self.stdout.write("LeanML stopped.")

    def _banner(self, url):
        lines = [f"LeanML is running on {url}  (Ctrl-C stops the web server and the worker)"]
        logins = settings.VAR_DIR / "demo_logins.txt"
        if logins.exists():
            lines.append(f"Demo logins ({logins}):")
            lines.extend("  " + line for line in logins.read_text().splitlines() if line.strip())
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
        self.stdout.flush()


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own server)
            return response.status == 200
    except urllib.error.HTTPError:
        return True  # it answered (e.g. a redirect to HTTPS when DEBUG is off)
    except (urllib.error.URLError, OSError):
        return False


def _stop(children):
    """SIGTERM every child still running, then SIGKILL what is left after the grace period."""
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in children.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

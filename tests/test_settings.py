"""Settings come from the environment only; production refuses unsafe defaults.

Settings are read once per process, so each configuration is tried in a fresh
Python subprocess with exactly the environment it names.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
CONFIG_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_TASK_ALWAYS_EAGER",
    "MEDIA_ROOT",
    "STATIC_ROOT",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "PYTEST_XDIST_WORKER",
    # Set by the browser test for Playwright's sync API; check --deploy rejects it.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def run_python(tmp_path, code=None, *, args=None, **env_vars):
    """Run Python in the project with a clean configuration plus ``env_vars``."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="leanml_site.settings", LEANML_VAR_DIR=str(tmp_path))
    env.update(env_vars)
    command = [sys.executable, *(args or ["-c", code])]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def settings_in_subprocess(tmp_path, expression, **env_vars):
    result = run_python(
        tmp_path,
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({expression}, default=str))",
        **env_vars,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def production_env():
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "leanml.example.com",
    }


def test_production_refuses_to_start_without_secret_key(tmp_path):
    env = production_env()
    del env["SECRET_KEY"]

    result = run_python(tmp_path, "import django; django.setup()", **env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    # No key was invented and left behind for a later start to pick up.
    assert not (tmp_path / "secret_key").exists()


def test_production_refuses_to_start_without_allowed_hosts(tmp_path):
    env = production_env()
    del env["ALLOWED_HOSTS"]

    result = run_python(tmp_path, "import django; django.setup()", **env)

    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set when DEBUG is off" in result.stderr


def test_check_deploy_is_clean_with_production_env(tmp_path):
    result = run_python(
        tmp_path,
        args=["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        **production_env(),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_development_key_is_random_and_kept_private(tmp_path):
    first = settings_in_subprocess(tmp_path, "s.SECRET_KEY")
    again = settings_in_subprocess(tmp_path, "s.SECRET_KEY")
    elsewhere = settings_in_subprocess(tmp_path / "other", "s.SECRET_KEY")

    assert first == again  # sessions survive a restart
    assert first != elsewhere  # never a fixed key from the source
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_defaults_are_sqlite_with_wal_and_immediate_transactions(tmp_path):
    database = settings_in_subprocess(tmp_path, 's.DATABASES["default"]')

    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(tmp_path / "leanml.sqlite3")
    assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]
    assert "busy_timeout" in database["OPTIONS"]["init_command"]
    assert database["OPTIONS"]["timeout"] >= 5


def test_defaults_use_the_embedded_filesystem_broker(tmp_path):
    broker, options = settings_in_subprocess(
        tmp_path, "[s.CELERY_BROKER_URL, s.CELERY_BROKER_TRANSPORT_OPTIONS]"
    )

    assert broker.startswith("filesystem://")
    assert options["data_folder_in"] == str(tmp_path / "broker" / "queue")
    assert (tmp_path / "broker" / "queue").is_dir()


def test_database_and_redis_urls_select_postgresql_and_redis(tmp_path):
    engine, broker, cache = settings_in_subprocess(
        tmp_path,
        '[s.DATABASES["default"]["ENGINE"], s.CELERY_BROKER_URL, s.CACHES["default"]["BACKEND"]]',
        DATABASE_URL="postgres://leanml@db.example.com:5432/leanml",
        REDIS_URL="redis://cache.example.com:6379/0",
    )

    assert engine == "django.db.backends.postgresql"
    assert broker == "redis://cache.example.com:6379/0"
    assert cache == "django.core.cache.backends.redis.RedisCache"


@pytest.mark.django_db
def test_the_sqlite_database_really_runs_in_wal_mode():
    if connection.vendor != "sqlite":
        pytest.skip("this run uses PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000
    assert settings.DATABASES["default"]["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


@pytest.mark.parametrize(
    ("broker", "cache"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
        ("redis://:secret@cache.internal:6380/7", "redis://:secret@cache.internal:6380/8"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/1"),
        ("", ""),
    ],
)
def test_the_cache_never_shares_the_brokers_redis_database(broker, cache):
    # Clearing a Redis cache is FLUSHDB: on the broker's database it would
    # drop every queued task.
    from leanml_site.settings import _next_redis_db

    assert _next_redis_db(broker) == cache

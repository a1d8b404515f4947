"""LeanML settings. Everything comes from environment variables.

With nothing set, LeanML runs for a newcomer on one machine: SQLite in ``var/``
and an embedded Celery broker (kombu's filesystem transport) that a real
worker process reads. Production sets ``DEBUG=0``, ``SECRET_KEY``,
``ALLOWED_HOSTS``, ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL``.
"""

import os
import secrets
import urllib.parse
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default):
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


VAR_DIR = Path(os.environ.get("LEANML_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)


def _secret_key():
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (production).")
    # Development only: a random key kept beside the SQLite file, so sessions
    # survive restarts without a key ever being written in the source.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
if not DEBUG and not os.environ.get("ALLOWED_HOSTS"):
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off (production).")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_htmx",
    "django_celery_results",
    "django_celery_beat",
    "leanml_site",
    "labelling",
    "iterations",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "leanml_site.urls"
WSGI_APPLICATION = "leanml_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'leanml.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker share one file: WAL lets readers run beside a writer, the
    # busy timeout makes a writer wait instead of failing with "database is
    # locked", and IMMEDIATE transactions take the write lock up front so two
    # transactions never deadlock upgrading from read to write.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;"
        ),
    }
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(
        VAR_DIR / f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.sqlite3"
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "labelling:project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Uploads: anything over 2.5 MB streams to a temporary file; the hard cap on
# an import file is LEANML_MAX_UPLOAD_MB, checked before any row is read.
LEANML_MAX_UPLOAD_MB = int(os.environ.get("LEANML_MAX_UPLOAD_MB", "512"))
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# Files above this many bytes are imported by a Celery job with a progress bar.
LEANML_INLINE_IMPORT_BYTES = int(os.environ.get("LEANML_INLINE_IMPORT_BYTES", str(2_000_000)))

# --- Celery ---------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")


def _next_redis_db(url):
    """The same Redis server, the next database number: the cache must not
    share the broker's database, since clearing a cache (FLUSHDB) would
    also drop every queued task."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.strip("/")
    number = int(path) + 1 if path.isdigit() else 1
    return urllib.parse.urlunsplit(parts._replace(path=f"/{number}"))


REDIS_CACHE_URL = os.environ.get("REDIS_CACHE_URL") or _next_redis_db(REDIS_URL)
# The filesystem transport ignores the host; naming one keeps kombu from
# warning "No hostname was supplied" on every connection.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://localhost/"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Remote-control (pidbox) exchanges; by default kombu puts them in the cwd.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 1800
CELERY_TASK_TIME_LIMIT = 1900
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat copies these into its database schedule at start; more can be added in the admin.
CELERY_BEAT_SCHEDULE = {
    # "next sample" also frees expired leases, but a queue nobody is working
    # would otherwise keep abandoned samples reserved.
    "expire-abandoned-leases": {"task": "labelling.queue_expire_leases", "schedule": 60.0},
    # Projects with "retrain every N new labels": a cheap count per project;
    # five minutes is soon enough for a rule counted in tens of labels.
    "auto-retrain-check": {"task": "iterations.auto_retrain_check", "schedule": 300.0},
    # Projects with "surface every N hours": the check is one query per such
    # project; hourly is as fine as the setting's unit.
    "surfacing-due": {"task": "monitoring.surfacing_due", "schedule": 3600.0},
    # Drift of the last day's logs against each serving version's training snapshot.
    "drift-check": {"task": "monitoring.drift_check", "schedule": 24 * 3600.0},
    # Hourly/daily metric windows from the logs and ground truth that arrived
    # since the last run: five minutes keeps the current hour's chart fresh.
    "metrics-update": {"task": "monitoring.metrics_update", "schedule": 300.0},
}
# Training is CPU-heavy and long: its own queue, so imports and beat jobs never wait behind it.
# Its name is a setting so a test (or a second site on the same broker) can use its own.
# Modules holding a team's own sub-models (``@register``-ed classes), imported
# by every web and worker process at start-up; see docs/submodels.md.
LEANML_SUBMODEL_MODULES = env_list("LEANML_SUBMODEL_MODULES", [])
LEANML_TRAINING_QUEUE = os.environ.get("LEANML_TRAINING_QUEUE", "training")
# A running training job beats every HEARTBEAT seconds; one silent for STALE
# seconds is taken as orphaned (its worker died) and is run again.
LEANML_TRAINING_HEARTBEAT_SECONDS = float(os.environ.get("LEANML_TRAINING_HEARTBEAT_SECONDS", "30"))
LEANML_TRAINING_STALE_SECONDS = float(os.environ.get("LEANML_TRAINING_STALE_SECONDS", "180"))
if not 0 < LEANML_TRAINING_HEARTBEAT_SECONDS < LEANML_TRAINING_STALE_SECONDS:
    raise ImproperlyConfigured(
        "LEANML_TRAINING_HEARTBEAT_SECONDS must be positive and below LEANML_TRAINING_STALE_SECONDS."
    )
CELERY_TASK_ROUTES = {
    "iterations.training_run": {"queue": LEANML_TRAINING_QUEUE},
    "iterations.regression_run": {"queue": LEANML_TRAINING_QUEUE},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_CACHE_URL}
        if REDIS_CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "leanml_site.api.IdCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "leanml_site.api.exception_handler",
    # "api_key": each monitoring client key (a call can carry 100,000 rows).
    "DEFAULT_THROTTLE_RATES": {
        "user": "6000/minute",
        "api_key": os.environ.get("LEANML_API_KEY_RATE", "600/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LeanML API",
    "DESCRIPTION": "Projects, samples, labels, queue, cleaning, consensus, import and export.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI is served from the installed sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status"; each choice set gets its own schema name.
    "ENUM_NAME_OVERRIDES": {
        "IterationStatusEnum": "iterations.models.Iteration.Status",
        "ModelVersionStatusEnum": "iterations.models.ModelVersion.Status",
        "StatusEnum": "labelling.models.Sample.Status",
    },
}

# --- Security -------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the cookie-less meta tag
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"client_error": {"()": "leanml_site.log_filters.ClientErrorWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        # Django's own handlers would print every django.* line a second time
        # with DEBUG on; the root's console prints each once.
        "django": {"handlers": [], "propagate": True},
        "django.request": {"filters": ["client_error"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

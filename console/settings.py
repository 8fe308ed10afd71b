"""Settings, read from the environment.

| variable | default | meaning |
| --- | --- | --- |
| PODIUM_DATA_DIR | ./var | database, embedded Redis socket, secret key, logs |
| DATABASE_URL | SQLite in the data directory | any URL dj-database-url understands |
| REDIS_URL | the embedded Redis socket in the data dir | channel layer, Celery broker, cache |
| PODIUM_HOST / PODIUM_PORT | 127.0.0.1 / 8000 | where the web process listens |
| PODIUM_DEBUG | off | Django debug pages |
| PODIUM_ALLOWED_HOSTS | * | comma-separated host names |
| PODIUM_SECURE_COOKIES | off | mark session and CSRF cookies Secure (behind HTTPS) |
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DATA_DIR = Path(os.environ.get("PODIUM_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
LOG_DIR = DATA_DIR / "logs"


def _secret_key() -> str:
    """The key from the environment, else the one kept in the data directory (made once)."""
    if key := os.environ.get("PODIUM_SECRET_KEY"):
        return key
    path = DATA_DIR / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        key = secrets.token_urlsafe(50)
        handle.write(key)
    return key


SECRET_KEY = _secret_key()
DEBUG = _env_flag("PODIUM_DEBUG")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("PODIUM_ALLOWED_HOSTS", "*").split(",")]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("PODIUM_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env_flag("PODIUM_SECURE_COOKIES")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

WEB_HOST = os.environ.get("PODIUM_HOST", "127.0.0.1")
WEB_PORT = int(os.environ.get("PODIUM_PORT", "8000"))

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "ninja",
    "apps.accounts",
    "apps.audit",
    "apps.system",
    "apps.monitoring",
    "apps.scheduler",
    "apps.training",
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
    "apps.audit.middleware.request_context_middleware",
    "apps.system.middleware.ApplicationErrorPagesMiddleware",
]

ROOT_URLCONF = "console.urls"
# Async loops every web process runs beside the status loop (apps.system.lifespan).
LIFESPAN_LOOPS = ["apps.monitoring.fleet.fleet_loop"]
ASGI_APPLICATION = "console.asgi.application"

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
                "apps.system.context_processors.navigation",
            ],
        },
    },
]

# Database: SQLite in WAL mode by default, safe for the several processes `up` starts.
SQLITE_PATH = DATA_DIR / "podium.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
        ),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# Redis: the embedded server's socket in the data directory unless REDIS_URL says otherwise.
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
REDIS_IS_EMBEDDED = "REDIS_URL" not in os.environ

# The channel layer waits for messages with blocking pops of up to 5 s; redis-py 8 would
# time its sockets out at 5 s by default and tear down every quiet websocket.
CHANNEL_LAYER_SOCKET_TIMEOUT = 30.0
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT}],
            "prefix": "podium:asgi",
        },
    }
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "podium:cache",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.db"

# Celery: thin tasks, JSON only, acknowledged after they finish.
# Kombu names a Redis unix socket redis+socket://, where redis-py and Channels say unix://.
CELERY_BROKER_URL = REDIS_URL.replace("unix://", "redis+socket://", 1)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "global_keyprefix": "podium:celery:"}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "queue-probe": {
        "task": "system.queue_probe",
        "schedule": float(os.environ.get("PODIUM_QUEUE_PROBE_INTERVAL", "5")),
    },
    "audit-prune": {"task": "audit.prune", "schedule": 6 * 3600.0},
    "monitoring-sweep": {
        "task": "monitoring.sweep_nodes",
        "schedule": float(os.environ.get("PODIUM_NODE_SWEEP_INTERVAL", "1")),
    },
    "monitoring-rollup": {"task": "monitoring.rollup", "schedule": 60.0},
    "monitoring-prune": {"task": "monitoring.prune", "schedule": 600.0},
    "scheduler-pass": {
        "task": "scheduler.pass",
        "schedule": float(os.environ.get("PODIUM_SCHEDULER_INTERVAL", "2")),
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "apps.system.staticfinders.PlotlyFinder",
]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# Product settings.
PODIUM = {
    # Seconds between component heartbeats, and the age after which a component is down.
    "HEARTBEAT_INTERVAL": float(os.environ.get("PODIUM_HEARTBEAT_INTERVAL", "0.5")),
    "HEARTBEAT_STALE_AFTER": float(os.environ.get("PODIUM_HEARTBEAT_STALE_AFTER", "1.5")),
    # Sign-in and token requests allowed per client address and per user name in a window.
    "LOGIN_RATE_LIMIT": int(os.environ.get("PODIUM_LOGIN_RATE_LIMIT", "10")),
    "LOGIN_RATE_WINDOW": int(os.environ.get("PODIUM_LOGIN_RATE_WINDOW", "300")),
    # Days audit entries are kept (0 keeps them forever).
    "AUDIT_RETENTION_DAYS": int(os.environ.get("PODIUM_AUDIT_RETENTION_DAYS", "365")),
    # Rows per page on the pages.
    "PAGE_SIZE": 50,
    # Agents: seconds between telemetry batches and between heartbeats (sent to them on
    # connect), and the silence after which a node is suspect, then lost.
    "AGENT_INTERVAL": float(os.environ.get("PODIUM_AGENT_INTERVAL", "1")),
    "AGENT_HEARTBEAT_INTERVAL": float(os.environ.get("PODIUM_AGENT_HEARTBEAT_INTERVAL", "2")),
    "NODE_SUSPECT_AFTER": float(os.environ.get("PODIUM_NODE_SUSPECT_AFTER", "6")),
    "NODE_LOST_AFTER": float(os.environ.get("PODIUM_NODE_LOST_AFTER", "10")),
    # Agent messages larger than this are refused and counted.
    "AGENT_MAX_MESSAGE_BYTES": int(os.environ.get("PODIUM_AGENT_MAX_MESSAGE_BYTES", "262144")),
    # Messages per second one agent may send (sustained) and in a burst, before drops.
    "AGENT_RATE": float(os.environ.get("PODIUM_AGENT_RATE", "20")),
    "AGENT_BURST": int(os.environ.get("PODIUM_AGENT_BURST", "200")),
    # Seconds raw samples wait in an agent connection's buffer before a bulk insert.
    "TELEMETRY_FLUSH_INTERVAL": float(os.environ.get("PODIUM_TELEMETRY_FLUSH_INTERVAL", "5")),
    # Seconds between fleet frames pushed to the overview page.
    "FLEET_PUSH_INTERVAL": float(os.environ.get("PODIUM_FLEET_PUSH_INTERVAL", "0.25")),
    # Retention: raw samples in hours, 1-minute rollups in days, 1-hour rollups in days.
    "RAW_RETENTION_HOURS": float(os.environ.get("PODIUM_RAW_RETENTION_HOURS", "6")),
    "MINUTE_RETENTION_DAYS": float(os.environ.get("PODIUM_MINUTE_RETENTION_DAYS", "30")),
    "HOUR_RETENTION_DAYS": float(os.environ.get("PODIUM_HOUR_RETENTION_DAYS", "365")),
    # A warn-only XID (109, unknown codes) seen this many times in a day takes the GPU out;
    # 0 never does.
    "XID_REPEAT_DRAIN": int(os.environ.get("PODIUM_XID_REPEAT_DRAIN", "3")),
    # Webhook delivery: attempts per event and the first retry delay in seconds (doubling).
    "ALERT_ATTEMPTS": int(os.environ.get("PODIUM_ALERT_ATTEMPTS", "5")),
    "ALERT_RETRY_DELAY": float(os.environ.get("PODIUM_ALERT_RETRY_DELAY", "5")),
    # Scheduler: seconds between timed passes (passes also run at once after a submit, an
    # exit, a node or health change), and how long a placed job may take to start.
    "SCHEDULER_INTERVAL": float(os.environ.get("PODIUM_SCHEDULER_INTERVAL", "2")),
    "JOB_START_TIMEOUT": float(os.environ.get("PODIUM_JOB_START_TIMEOUT", "120")),
    # Seconds a stopping job gets past its grace before the console kills it again.
    "JOB_STOP_MARGIN": float(os.environ.get("PODIUM_JOB_STOP_MARGIN", "30")),
    # Defaults for new jobs: SIGTERM-to-SIGKILL grace and restarts after its own failures.
    "JOB_GRACE_SECONDS": float(os.environ.get("PODIUM_JOB_GRACE_SECONDS", "60")),
    "JOB_MAX_RESTARTS": int(os.environ.get("PODIUM_JOB_MAX_RESTARTS", "3")),
    # A node lost this many times within the window is held out of its pool for a while.
    "NODE_FLAP_FAILURES": int(os.environ.get("PODIUM_NODE_FLAP_FAILURES", "3")),
    "NODE_FLAP_WINDOW": float(os.environ.get("PODIUM_NODE_FLAP_WINDOW", "3600")),
    "NODE_FLAP_HOLD": float(os.environ.get("PODIUM_NODE_FLAP_HOLD", "1800")),
    # Training: how many complete checkpoints a job keeps by default (pinned ones aside),
    # and up to which size a checkpoint's checksums are verified before a resume (larger
    # ones are checked by file sizes).
    "CHECKPOINT_KEEP": int(os.environ.get("PODIUM_CHECKPOINT_KEEP", "3")),
    "CHECKPOINT_VERIFY_MAX_BYTES": int(
        os.environ.get("PODIUM_CHECKPOINT_VERIFY_MAX_BYTES", str(1024**3))
    ),
    "DATASET_UPLOAD_MAX_MB": int(os.environ.get("PODIUM_DATASET_UPLOAD_MAX_MB", "2048")),
}
# Where jobs write checkpoints: storage every node and the console mount at this path.
PODIUM_CHECKPOINT_ROOT = Path(
    os.environ.get("PODIUM_CHECKPOINT_ROOT", DATA_DIR / "checkpoints")
).resolve()
# Datasets: the roots a registered path must lie under (separated by ":"), and where
# uploads are kept (shared storage too).
PODIUM_DATASET_ROOTS = [
    Path(root).resolve()
    for root in os.environ.get("PODIUM_DATASET_ROOTS", str(DATA_DIR / "datasets")).split(":")
    if root
]
PODIUM_DATASET_UPLOAD_DIR = Path(
    os.environ.get("PODIUM_DATASET_UPLOAD_DIR", DATA_DIR / "datasets" / "uploads")
).resolve()
# The agent messages the scheduler handles (see apps.monitoring.agent_consumer).
AGENT_MESSAGE_HANDLERS = {
    "hello": "apps.scheduler.agents.on_hello",
    "job_started": "apps.scheduler.agents.on_job_started",
    "job_exited": "apps.scheduler.agents.on_job_exited",
    "job_output": "apps.training.agents.on_job_output",
}
# Called when a job is submitted (``hook(job, spec, actor)``, in its transaction) and when
# an attempt is placed (``hook(job, allocations) -> Launch``); see apps.scheduler.launch.
JOB_SUBMIT_HOOKS = ["apps.training.launch.job_submitted"]
JOB_LAUNCH_HOOKS = ["apps.training.launch.attempt_launch"]
# XID 109 (context-switch timeout) is disputed: "warn" (default) or "reset".
PODIUM_XID_109_POLICY = os.environ.get("PODIUM_XID_109_POLICY", "warn")
# Bearer token /metrics requires; empty leaves it open (to the network it listens on).
PODIUM_METRICS_TOKEN = os.environ.get("PODIUM_METRICS_TOKEN", "")
# API lists: `limit` defaults to 50 and may not exceed 500.
NINJA_PAGINATION_PER_PAGE = 50
NINJA_PAGINATION_MAX_LIMIT = 500

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"health_probes": {"()": "apps.system.logfilters.HealthProbeFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["health_probes"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("PODIUM_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

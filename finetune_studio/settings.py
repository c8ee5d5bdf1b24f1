"""Finetune Studio settings: one module, configured from the environment.

Nothing set means standalone mode: SQLite and file storage under var/, tasks and
live events in-process. Each service is switched on by its own variable
(DATABASE_URL, REDIS_URL, S3_ENDPOINT_URL / MINIO_ENDPOINT, OLLAMA_URL); see
.env.example and the README's configuration table.
"""

import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from botocore.config import Config as BotoConfig
from django.core.exceptions import ImproperlyConfigured

from inference.endpoints import EndpointConfigError, parse_endpoint_settings

from .env import env_bool, env_float, env_int, env_json_object, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
# Standalone mode keeps its database, files, key and beat schedule here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
# Without Redis there is no broker to share: the web process runs the Celery worker itself.
TASKS_IN_PROCESS = REDIS_URL is None


def _standalone_secret_key() -> str:
    """A key generated once per installation and kept in var/, never a fixed default."""
    key_file = VAR_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not TASKS_IN_PROCESS:
        raise ImproperlyConfigured("SECRET_KEY must be set when REDIS_URL is set (several processes must share it)")
    SECRET_KEY = _standalone_secret_key()
# Earlier keys while rotating SECRET_KEY (comma-separated): sessions, signatures and sealed secrets made with them
# still verify; new ones use SECRET_KEY.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_eventstream",
    "finetune_studio.apps.CoreConfig",
    "accounts",
    "jobs",
    "logs_app",
    "models_app",
    "runner",
    "evaluations",
    "inference",
    "sweeps",
    "webhooks",
    "openai_compat",
    "dashboard",
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
]

ROOT_URLCONF = "finetune_studio.urls"
ASGI_APPLICATION = "finetune_studio.asgi.application"
WSGI_APPLICATION = "finetune_studio.wsgi.application"

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
            "builtins": ["finetune_studio.format_tags"],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "sqlite"))
if DATABASE_URL and not DATABASE_URL.startswith("sqlite"):
    _db = dj_database_url.parse(DATABASE_URL)
    # Under ASGI persistent connections leak; psycopg's pool gives the speed back.
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        "pool": {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1, minimum=0),
            "max_size": env_int("DB_POOL_MAX_SIZE", 10, minimum=1),
            "timeout": env_int("DB_POOL_TIMEOUT", 10, minimum=1),
        },
        "connect_timeout": 5,
    }
    _pool_max = _db["OPTIONS"]["pool"]["max_size"]
    # Event streams' reads and openings holding a connection at once, per web process (finetune_studio/stream_db.py);
    # the others wait their turn on the event loop. Below the pool's size, so other requests find a connection.
    STREAM_DB_SLOTS = env_int("STREAM_DB_SLOTS", max(1, _pool_max - 2), minimum=1, maximum=_pool_max)
else:
    _sqlite_path = urlparse(DATABASE_URL).path if DATABASE_URL else str(VAR_DIR / "db.sqlite3")
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _sqlite_path,
        # WAL + IMMEDIATE transactions: concurrent writers (web, worker threads) wait instead of failing.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
    STREAM_DB_SLOTS = env_int("STREAM_DB_SLOTS", 4, minimum=1)
# A stream opening waits this long for its turn before it is answered 503 "busy" with Retry-After (after a
# restart every browser reconnects at once; bench/bench_logs_storm.py). Below a proxy's usual 60 s read
# timeout, so that the browser gets our answer rather than the proxy's 504.
STREAM_OPEN_WAIT_SECONDS = env_int("STREAM_OPEN_WAIT_SECONDS", 45, minimum=1)
# The Retry-After of a 503 "busy" (load shed; the database is fine).
BUSY_RETRY_AFTER_SECONDS = env_int("BUSY_RETRY_AFTER_SECONDS", 5, minimum=1)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache --------------------------------------------------------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_timeout": 2,
                "socket_connect_timeout": 2,
                "pool_class": "finetune_studio.cache.SharedConnectionPool",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Object storage: three buckets --------------------------------------------------------------
BUCKETS = {
    "datasets": env_str("S3_BUCKET_DATASETS", "datasets"),
    "models": env_str("S3_BUCKET_MODELS", "models"),
    "logs": env_str("S3_BUCKET_LOGS", "logs"),
}


def _s3_endpoint_url() -> str | None:
    explicit = env_url("S3_ENDPOINT_URL", schemes=("http", "https"))
    if explicit:
        return explicit
    minio = env_str("MINIO_ENDPOINT")
    if not minio:
        return None
    if "://" in minio:
        raise ImproperlyConfigured(f"MINIO_ENDPOINT={minio!r} must be host:port without a scheme (see MINIO_USE_SSL)")
    scheme = "https" if env_bool("MINIO_USE_SSL", False) else "http"
    return f"{scheme}://{minio}"


S3_ENDPOINT_URL = _s3_endpoint_url()
STORAGE_BACKEND = env_str("STORAGE_BACKEND", "s3" if S3_ENDPOINT_URL else "local")
if STORAGE_BACKEND not in ("s3", "local"):
    raise ImproperlyConfigured(f"STORAGE_BACKEND={STORAGE_BACKEND!r} must be 's3' or 'local'")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID") or env_str("MINIO_USER") or env_str("AWS_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY") or env_str("MINIO_PASSWORD") or env_str("AWS_SECRET_ACCESS_KEY")
S3_REGION = env_str("S3_REGION", "us-east-1")
# Links handed to browsers may need another host than the one the servers use (minio:9000 vs localhost:9000).
S3_PUBLIC_ENDPOINT_URL = env_url("S3_PUBLIC_ENDPOINT_URL", schemes=("http", "https")) or S3_ENDPOINT_URL
LOCAL_STORAGE_ROOT = Path(env_str("LOCAL_STORAGE_ROOT", str(VAR_DIR / "storage")))
PRESIGNED_URL_TTL = env_int("PRESIGNED_URL_TTL", 24 * 3600, minimum=60, maximum=7 * 24 * 3600)

if STORAGE_BACKEND == "s3" and not (S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured(
        "S3 storage needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (or MINIO_USER/MINIO_PASSWORD)"
    )


def _bucket_storage(bucket: str) -> dict:
    if STORAGE_BACKEND == "s3":
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKETS[bucket],
                "endpoint_url": S3_ENDPOINT_URL,
                "access_key": S3_ACCESS_KEY_ID,
                "secret_key": S3_SECRET_ACCESS_KEY,
                "region_name": S3_REGION,
                "addressing_style": "path",
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": PRESIGNED_URL_TTL,
                "file_overwrite": True,
                "client_config": BotoConfig(
                    retries={"max_attempts": 5, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                ),
            },
        }
    return {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(LOCAL_STORAGE_ROOT / bucket), "file_permissions_mode": 0o640},
    }


# Hashed, compressed static files need `collectstatic` (make run, the Docker image); without it, serve from the source.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", True)
_static_backend = (
    "whitenoise.storage.CompressedManifestStaticFilesStorage"
    if STATIC_MANIFEST
    else "django.contrib.staticfiles.storage.StaticFilesStorage"
)
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": _static_backend},
    **{bucket: _bucket_storage(bucket) for bucket in BUCKETS},
}
MEDIA_ROOT = VAR_DIR / "media"

# --- Uploads ------------------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = None
DATASET_MAX_UPLOAD_BYTES = env_int("DATASET_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024, minimum=1024)
MODEL_FILE_MAX_UPLOAD_BYTES = env_int("MODEL_FILE_MAX_UPLOAD_BYTES", 64 * 1024**3, minimum=1024)

# --- Ollama -------------------------------------------------------------------------------------
OLLAMA_URL = env_url("OLLAMA_URL", "http://127.0.0.1:11434", schemes=("http", "https"))
OLLAMA_TIMEOUT = env_int("OLLAMA_TIMEOUT", 120, minimum=1)

# --- Inference endpoints ------------------------------------------------------------------------
# Built in: "local" (the studio's own engine, on the evaluations workers) and "ollama" (OLLAMA_URL). More come
# from the admin or from INFERENCE_ENDPOINTS, a JSON list of {"name", "kind": "ollama"|"openai"|"local", "url",
# "api_key_env" | "api_key_file", "concurrency", "timeout", "enabled"}; keys are never given in clear.
try:
    INFERENCE_ENDPOINTS = parse_endpoint_settings(env_str("INFERENCE_ENDPOINTS"))
except EndpointConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None
INFERENCE_DEFAULT_ENDPOINT = env_str("INFERENCE_DEFAULT_ENDPOINT", "ollama")
# May name an admin endpoint too, so it is checked when first used (the error lists the known names).
# Seconds the endpoint list waits for each server's model list.
INFERENCE_STATUS_TIMEOUT = env_int("INFERENCE_STATUS_TIMEOUT", 3, minimum=1, maximum=60)
LOCAL_INFERENCE_DEVICE = env_str("LOCAL_INFERENCE_DEVICE", "auto")
if not (LOCAL_INFERENCE_DEVICE in ("auto", "cpu", "cuda") or LOCAL_INFERENCE_DEVICE.startswith("cuda:")):
    raise ImproperlyConfigured(f"LOCAL_INFERENCE_DEVICE={LOCAL_INFERENCE_DEVICE!r} is not auto, cpu, cuda or cuda:N")
# Weights the local engine keeps loaded per worker process (least recently used go first).
LOCAL_INFERENCE_MAX_BYTES = env_int("LOCAL_INFERENCE_MAX_BYTES", 8 * 1024**3, minimum=1024**2)
LOCAL_INFERENCE_BATCH_SIZE = env_int("LOCAL_INFERENCE_BATCH_SIZE", 16, minimum=1, maximum=512)
# Whether this process answers chats (the OpenAI-compatible chat completions, the model page's chat) with the local
# engine for versions not deployed to Ollama, and for bases. On in a standalone studio, where the web process is the
# worker; off by default in production, where web processes load no models and deployed versions answer from Ollama.
LOCAL_INFERENCE_SERVES_CHAT = env_bool("LOCAL_INFERENCE_SERVES_CHAT", TASKS_IN_PROCESS)
# The most tokens one chat answer may have (also what an answer may run to when the request sets no max_tokens).
CHAT_MAX_TOKENS = env_int("CHAT_MAX_TOKENS", 1024, minimum=1, maximum=32768)
# Registry adapters an evaluation asks on the local endpoint are copied here per worker (by their sha256).
LOCAL_INFERENCE_CACHE_DIR = Path(env_str("LOCAL_INFERENCE_CACHE_DIR", str(VAR_DIR / "cache" / "local-inference")))

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Long work has its own queues so evaluation and GPU workers can live on other machines.
CELERY_TASK_ROUTES = {
    "jobs.job_run_local": {"queue": "training"},
    "evaluations.tasks.evaluation_run": {"queue": "evaluations"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Fail in seconds, not minutes, when Redis is unreachable.
    "socket_timeout": 2,
    "socket_connect_timeout": 2,
    # Must exceed the longest task; long jobs also keep their truth in our own tables (lease + heartbeat).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 12 * 3600, minimum=60),
}
if not REDIS_URL:
    # The in-memory transport polls its queues (kombu's default: once a second): every hop of a sweep's
    # job → model → evaluation → next job chain waited up to 1 s for it (bench/bench_registry.py --sweep).
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.05
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BEAT_SCHEDULE: dict = {}
STANDALONE_WORKER_THREADS = env_int("STANDALONE_WORKER_THREADS", 8, minimum=2)
# Services called at start of a standalone process to re-queue work the in-memory broker forgot.
UNFINISHED_WORK_REDISPATCHERS: list[str] = []
# A queued job or pending evaluation nobody claimed for this long may have lost its broker message (Redis
# restarted without persistence, say): the sweepers send it again, once per period. Work that merely waits
# behind other work gets an extra message per period, which finds nothing to claim once it has run.
QUEUED_REDISPATCH_SECONDS = env_int("QUEUED_REDISPATCH_SECONDS", 600, minimum=30)

# --- Live events (django-eventstream) -----------------------------------------------------------
if REDIS_URL:
    _redis = urlparse(REDIS_URL)
    EVENTSTREAM_REDIS = {
        "host": _redis.hostname or "127.0.0.1",
        "port": _redis.port or 6379,
        "db": int((_redis.path or "/0").lstrip("/") or 0),
        **({"password": _redis.password} if _redis.password else {}),
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "client_name": "finetune-studio-events",  # CLIENT LIST tells the web processes' subscribers apart
    }
    # Pub/sub channels are server-wide (database numbers do not separate them): one per studio.
    EVENTS_REDIS_CHANNEL = env_str("EVENTS_REDIS_CHANNEL", f"finetune-studio:db{EVENTSTREAM_REDIS['db']}:events")
EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "finetune_studio.events.StudioChannelManager"

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous requests a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "finetune_studio.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "finetune_studio.api.StudioPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "finetune_studio.api.StrictOrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "finetune_studio.api.exception_handler",
    # Rate limits fail open when the cache (Redis) is unreachable: see finetune_studio/throttling.py.
    "DEFAULT_THROTTLE_CLASSES": [
        "finetune_studio.throttling.StudioUserRateThrottle",
        "finetune_studio.throttling.StudioAnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_THROTTLE_USER", "3000/min"),
        "anon": env_str("API_THROTTLE_ANON", "60/min"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Finetune Studio API",
    "DESCRIPTION": "Training jobs, live logs, a model registry and evaluations of fine-tuned LLMs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs page's Swagger UI from the studio's own static files, never a CDN: a self-hosted studio may have
    # no internet, and a script from elsewhere would run with the signed-in user's session.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobs.models.Job.Status",
        "ModelStatusEnum": "models_app.models.RegisteredModel.Status",
        "ModelTypeEnum": "models_app.models.RegisteredModel.Type",
        "EvaluationStatusEnum": "evaluations.models.Evaluation.Status",
        "LogLevelEnum": "logs_app.models.LogEntry.Level",
        "TaskEnum": "jobs.models.Dataset.Task",
    },
}

# --- Auth, sessions, security -------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Behind HTTPS (directly or via a TLS-terminating proxy) set DEPLOY_HTTPS=true.
DEPLOY_HTTPS = env_bool("DEPLOY_HTTPS", False)
SESSION_COOKIE_SECURE = DEPLOY_HTTPS
CSRF_COOKIE_SECURE = DEPLOY_HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", DEPLOY_HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if DEPLOY_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", DEPLOY_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", DEPLOY_HTTPS)
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# Standalone console: Celery's lines for every task sent by beat, received and finished (two every five seconds
# from log aggregation alone) bury what matters. Failures (WARNING and above) still show; true shows them all.
STANDALONE_TASK_LOGS = env_bool("STANDALONE_TASK_LOGS", False)
if TASKS_IN_PROCESS and not STANDALONE_TASK_LOGS:
    LOGGING["loggers"].update(
        {name: {"level": "WARNING"} for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace")}
    )

# --- Per-app settings (each app's section; keep them here, in one module) ----------------------
# jobs
DATASET_MAX_LABELS = env_int("DATASET_MAX_LABELS", 1000, minimum=1)
# Where `manage.py build_demo_base` puts the tiny demo base; the dataset page renders records with it.
DEMO_BASE_DIR = Path(env_str("DEMO_BASE_DIR", str(VAR_DIR / "demo-base")))
# The dataset page's token-length histogram reads at most this many records of a dataset (about 500 chat
# records a second on one core: bench/bench_dataset_preview.py); the lengths are cached an hour.
DATASET_PREVIEW_MAX_RECORDS = env_int("DATASET_PREVIEW_MAX_RECORDS", 2000, minimum=1)
# …and spends at most about this long on them (records after that are not read; the page says how many were).
DATASET_PREVIEW_MAX_SECONDS = env_int("DATASET_PREVIEW_MAX_SECONDS", 5, minimum=0)
# A running job whose runner sent no heartbeat for this long is failed by the sweeper (beat, every 30 s).
JOB_HEARTBEAT_TIMEOUT = env_int("JOB_HEARTBEAT_TIMEOUT", 120, minimum=2)
JOB_HEARTBEAT_INTERVAL = env_int("JOB_HEARTBEAT_INTERVAL", 5, minimum=1)
if JOB_HEARTBEAT_INTERVAL * 2 > JOB_HEARTBEAT_TIMEOUT:
    raise ImproperlyConfigured("JOB_HEARTBEAT_TIMEOUT must be at least twice JOB_HEARTBEAT_INTERVAL")
JOB_CANCEL_POLL_SECONDS = 1.0
JOB_KILL_GRACE_SECONDS = env_int("JOB_KILL_GRACE_SECONDS", 10, minimum=0)
JOB_LOG_BATCH_LINES = 200
JOB_LOG_BATCH_SECONDS = 0.05
JOB_WORK_DIR = env_str("JOB_WORK_DIR") or None
# Base models a job may name (finetune_studio/base_models.py): the demo base, names declared here
# ({"name": "/folder"}), folders under BASE_MODELS_DIR and the local Hugging Face cache; a path is accepted
# only inside BASE_MODELS_DIR or BASE_MODEL_ROOTS, and never inside the studio's own storage.
DEMO_BASE_DIR = Path(env_str("DEMO_BASE_DIR", str(VAR_DIR / "demo-base")))
BASE_MODELS_DIR = Path(env_str("BASE_MODELS_DIR", str(BASE_DIR / "base-models")))
BASE_MODEL_ROOTS = [Path(root) for root in env_list("BASE_MODEL_ROOTS", [])]
BASE_MODELS = env_json_object("BASE_MODELS")
HF_HUB_CACHE = Path(
    env_str("HF_HUB_CACHE") or str(Path(env_str("HF_HOME") or str(Path.home() / ".cache" / "huggingface")) / "hub")
)
# The only worker environment variables a trainer process sees (besides the contract's own).
JOB_TRAINER_ENV_PASSTHROUGH = env_list(
    "JOB_TRAINER_ENV_PASSTHROUGH",
    [
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "VIRTUAL_ENV",
        "CUDA_VISIBLE_DEVICES",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "OMP_NUM_THREADS",
    ],
)
JOB_EXTERNAL_POLL_SECONDS = env_int("JOB_EXTERNAL_POLL_SECONDS", 30, minimum=1)
CELERY_BEAT_SCHEDULE["jobs-sweep-stale"] = {"task": "jobs.job_sweep_stale", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["jobs-poll-external-status"] = {
    "task": "jobs.job_poll_external_status",
    "schedule": float(JOB_EXTERNAL_POLL_SECONDS),
}
UNFINISHED_WORK_REDISPATCHERS.append("jobs.services.job_redispatch_unfinished")

# logs_app
# Job log streams replay from the log table itself (event id = seq; logs_app/streaming.py).
LOG_STREAM_BACKLOG = env_int("LOG_STREAM_BACKLOG", 500, minimum=0, maximum=10_000)  # lines replayed on connect
LOG_STREAM_BACKLOG_MAX = 10_000
# Events one open stream may queue before it re-reads from the table (django-eventstream's default: 10).
LOG_STREAM_LISTENER_PENDING = env_int("LOG_STREAM_LISTENER_PENDING", 1000, minimum=10, maximum=100_000)
LOG_STREAM_EVENT_LINES = env_int("LOG_STREAM_EVENT_LINES", 200, minimum=1, maximum=5_000)  # per replayed event
LOG_STREAM_REPLAY_EVENTS = 100  # replayed events per table read
# An idle stream gets a keep-alive this often (proxies close silent connections) and re-reads the
# job's position from the table, in case an event never arrived (Redis restarted, say).
LOG_STREAM_KEEP_ALIVE_SECONDS = env_int("LOG_STREAM_KEEP_ALIVE_SECONDS", 20, minimum=1, maximum=300)
LOG_HISTORY_DEFAULT_LIMIT = 200
LOG_HISTORY_MAX_LIMIT = 1_000
LOG_INGEST_MAX_LINES = env_int("LOG_INGEST_MAX_LINES", 10_000, minimum=1)  # per POST
LOG_MAX_MESSAGE_CHARS = env_int("LOG_MAX_MESSAGE_CHARS", 64 * 1024, minimum=256)
LOG_RETENTION_DAYS = env_int("LOG_RETENTION_DAYS", 30, minimum=1)
LOG_AGGREGATION_INTERVAL_SECONDS = env_int("LOG_AGGREGATION_INTERVAL_SECONDS", 5, minimum=1)
LOG_AGGREGATION_MAX_BYTES = env_int("LOG_AGGREGATION_MAX_BYTES", 8 * 1024 * 1024, minimum=1024)  # per transaction
# A finished external job's unterminated last line is taken as complete after this long.
LOG_AGGREGATION_SETTLE_SECONDS = env_int("LOG_AGGREGATION_SETTLE_SECONDS", 60, minimum=0)
# Finished external jobs are still read this long after finishing (trailing uploads).
LOG_AGGREGATION_GRACE_SECONDS = env_int("LOG_AGGREGATION_GRACE_SECONDS", 3600, minimum=0)
CELERY_BEAT_SCHEDULE["logs-aggregate-objects"] = {
    "task": "logs_app.log_objects_aggregate_all",
    "schedule": float(LOG_AGGREGATION_INTERVAL_SECONDS),
    "options": {"expires": float(LOG_AGGREGATION_INTERVAL_SECONDS)},
}
CELERY_BEAT_SCHEDULE["logs-archive-expired"] = {"task": "logs_app.log_archive_expired", "schedule": 3600.0}

# models_app
# Deploying an adapter to Ollama (a Celery task on the default queue): Ollama converts the adapter in
# /api/create, which can take minutes on a big base; a deploy older than the stale limit may be restarted.
MODEL_DEPLOY_CREATE_TIMEOUT = env_int("MODEL_DEPLOY_CREATE_TIMEOUT", 900, minimum=10)
MODEL_DEPLOY_TIME_LIMIT = env_int("MODEL_DEPLOY_TIME_LIMIT", 3600, minimum=60)
MODEL_DEPLOY_STALE_SECONDS = MODEL_DEPLOY_TIME_LIMIT + 120
UNFINISHED_WORK_REDISPATCHERS.append("models_app.deployments.model_deploy_redispatch_unfinished")
# The safety net of the model a job's success queues (jobs.signals.job_succeeded): beat creates the missing
# models of jobs that succeeded longer ago than the grace (a refused or lost message), every interval.
MODELS_BACKFILL_INTERVAL_SECONDS = env_int("MODELS_BACKFILL_INTERVAL_SECONDS", 600, minimum=30)
MODELS_BACKFILL_GRACE_SECONDS = env_int("MODELS_BACKFILL_GRACE_SECONDS", 300, minimum=0)
CELERY_BEAT_SCHEDULE["models-backfill"] = {
    "task": "models_app.models_backfill",
    "schedule": float(MODELS_BACKFILL_INTERVAL_SECONDS),
    "options": {"expires": float(MODELS_BACKFILL_INTERVAL_SECONDS)},
}

# evaluations
# How long a running evaluation's heartbeat stays valid; an older one has lost its worker.
EVALUATION_LEASE_SECONDS = env_int("EVALUATION_LEASE_SECONDS", 120, minimum=10)
# Claims of one evaluation (first run + resumes after lost workers) before it is failed.
EVALUATION_MAX_ATTEMPTS = env_int("EVALUATION_MAX_ATTEMPTS", 3, minimum=1, maximum=20)
EVALUATION_TASK_TIME_LIMIT = env_int("EVALUATION_TASK_TIME_LIMIT", 12 * 3600, minimum=60)
EVALUATION_MAX_TEST_SET_BYTES = env_int("EVALUATION_MAX_TEST_SET_BYTES", 256 * 1024 * 1024, minimum=1024)
EVALUATION_DEFAULT_CONCURRENCY = env_int("EVALUATION_DEFAULT_CONCURRENCY", 4, minimum=1, maximum=64)
EVALUATION_MAX_RETRIES = env_int("EVALUATION_MAX_RETRIES", 3, minimum=0, maximum=20)
EVALUATION_RETRY_BACKOFF_MS = env_int("EVALUATION_RETRY_BACKOFF_MS", 500, minimum=1)
# A parity check (deployed Ollama model vs the registry adapter on the local engine) marks the deployment
# drifted when the deployed model's accuracy (token F1 for generation) is more than this below the adapter's (0.02 = 2
# points).
PARITY_MAX_DROP = env_float("PARITY_MAX_DROP", 0.02, minimum=0.0, maximum=1.0)
UNFINISHED_WORK_REDISPATCHERS.append("evaluations.services.evaluation_redispatch_unfinished")
CELERY_BEAT_SCHEDULE["evaluations-sweep-stale"] = {
    "task": "evaluations.tasks.evaluation_sweep_stale",
    "schedule": 60.0,
    "options": {"queue": "evaluations", "expires": 55},
}

# The trainer that jobs created through the OpenAI-compatible fine-tuning API (/openai/v1/) run.
OPENAI_COMPAT_TRAINER = env_str("OPENAI_COMPAT_TRAINER", "lora-sft")
# ...and the one that jobs with method {"type": "dpo"} run (on preference records).
OPENAI_COMPAT_DPO_TRAINER = env_str("OPENAI_COMPAT_DPO_TRAINER", "lora-dpo")
# OpenAI's model names a script may keep, each mapped to one of the studio's bases: {"gpt-4o-mini-2024-07-18": "…"}.
OPENAI_COMPAT_MODELS = env_json_object("OPENAI_COMPAT_MODELS")

# webhooks (issue 17): user-given targets, so checked against inward addresses unless allowed here.
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
WEBHOOK_CONNECT_TIMEOUT = env_int("WEBHOOK_CONNECT_TIMEOUT", 3, minimum=1, maximum=30)
WEBHOOK_READ_TIMEOUT = env_int("WEBHOOK_READ_TIMEOUT", 5, minimum=1, maximum=60)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 6, minimum=1, maximum=20)
# A pending delivery with no attempt for this long is queued again (beat; broker outage, standalone restart).
WEBHOOK_STALE_SECONDS = env_int("WEBHOOK_STALE_SECONDS", 900, minimum=60)
CELERY_BEAT_SCHEDULE["webhooks-redispatch-pending"] = {
    "task": "webhooks.webhook_redispatch_pending",
    "schedule": 300.0,
}

# sweeps (issue 17): trial progress arrives by signals; beat looks again in case one was lost.
CELERY_BEAT_SCHEDULE["sweeps-advance-running"] = {"task": "sweeps.sweep_advance_running", "schedule": 30.0}

# reliability (issue 7)
if REDIS_URL:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py 8 retries a client built from host/port 10 times: with Redis frozen, one event publish
    # held a request for 22 s. One try, bounded by socket_timeout: the rows are committed already and
    # clients catch up by replay.
    EVENTSTREAM_REDIS["retry"] = Retry(NoBackoff(), 0)
# Open event streams (job logs, page events) re-check their token/session (and the job's visibility) this often.
LOG_STREAM_ACCESS_RECHECK_SECONDS = env_int("LOG_STREAM_ACCESS_RECHECK_SECONDS", 5, minimum=1)

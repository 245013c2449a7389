"""Settings, read from the environment.

The embedded default needs no server: SQLite under var/ and SqliteHuey under var/.
Set DATABASE_URL and REDIS_URL to run at scale (PostgreSQL + Redis-backed huey).
"""

import importlib.util
import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
import dj_email_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _anymail_mailer(url: str) -> dict:
    esp = url.removeprefix("anymail:").strip("/")
    if not esp.isidentifier() or importlib.util.find_spec(f"anymail.backends.{esp}") is None:
        raise ImproperlyConfigured(
            f"EMAIL_URL={url!r}: anymail has no backend {esp!r} (e.g. anymail:sendgrid, anymail:mailgun, "
            "anymail:postmark, anymail:brevo, anymail:amazon_ses)."
        )
    return {"BACKEND": f"anymail.backends.{esp}.EmailBackend", "OPTIONS": {}}


def _mailer(url: str) -> dict:
    email = dj_email_url.parse(url)
    if "EMAIL_BACKEND" not in email:
        raise ImproperlyConfigured(
            f"EMAIL_URL={url!r}: unknown scheme; use one of {', '.join(sorted(dj_email_url.SCHEMES))} "
            "(e.g. smtp://host:25, console:, memory:) or anymail:<esp>."
        )
    backend = email["EMAIL_BACKEND"]
    if backend == "django.core.mail.backends.smtp.EmailBackend":
        # Django's SMTP backend that does not re-parse plain addresses (engine/channels/smtp_backend.py).
        options = {
            "host": email["EMAIL_HOST"],
            "port": email["EMAIL_PORT"],
            "username": email["EMAIL_HOST_USER"],
            "password": email["EMAIL_HOST_PASSWORD"],
            "use_tls": email["EMAIL_USE_TLS"],
            "use_ssl": email["EMAIL_USE_SSL"],
            "timeout": email["EMAIL_TIMEOUT"] or 30,
        }
        return {"BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend", "OPTIONS": options}
    if backend.endswith("filebased.EmailBackend"):
        return {"BACKEND": backend, "OPTIONS": {"file_path": email["EMAIL_FILE_PATH"]}}
    return {"BACKEND": backend, "OPTIONS": {}}


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false).")


class MissingSecretKey(ImproperlyConfigured):
    """manage.py prints it as one line: the start is refused, nothing else went wrong."""


def _development_secret_key(path: Path) -> str:
    """A random key made on the first development start and kept, readable only by its owner,
    so sessions and signed links survive a restart; never one in the repository."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(key)
        return key


def _secret_key() -> str:
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    if env_bool("DJANGO_DEVELOPMENT", False):
        return _development_secret_key(VAR_DIR / "secret-key")
    raise MissingSecretKey(
        "SECRET_KEY is not set: set it to 50+ random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        "or DJANGO_DEVELOPMENT=1 for a local key kept in var/secret-key (make run does this)."
    )


DEBUG = env_bool("DEBUG", False)
# Every signature (sessions, recipients' links, Message-IDs, VERP return paths) is made with
# SECRET_KEY; the old keys in SECRET_KEY_FALLBACKS (comma-separated) still verify, so a rotation
# keeps links and bounce addresses already sent working.
SECRET_KEY = _secret_key()
SECRET_KEY_FALLBACKS = [
    key.strip() for key in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if key.strip()
]
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "anymail",
    # Locks a username + address after repeated failed sign-ins (AXES_* below).
    "axes",
    # messaging before djhuey: its run_huey (graceful SIGTERM) takes precedence.
    "messaging",
    "huey.contrib.djhuey",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "messaging.sign_in.keep_session_alive",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as axes requires: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, huey consumer) write to one file: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front so transactions wait instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"


def _env_count(name: str, default: int, minimum: int = 1) -> int:
    value = os.environ.get(name, "").strip() or str(default)
    if not value.isdigit() or int(value) < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} must be a whole number of at least {minimum}.")
    return int(value)


# Sign-in lockout (django-axes, messaging/sign_in.py): staff accounts can email every student, so
# a username is locked for one address after SIGN_IN_FAILURE_LIMIT failures (a success starts the
# count again), on /login/ and /admin/ alike, until SIGN_IN_LOCKOUT_MINUTES pass without another
# attempt. Locking the pair, not the username alone, keeps a guesser elsewhere from locking the
# real user out. Unlock: delete the attempt in the admin, or manage.py axes_reset_username <name>.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before any check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = _env_count("SIGN_IN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=_env_count("SIGN_IN_LOCKOUT_MINUTES", 15))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "messaging.sign_in.lockout_response"
# The client's address: REMOTE_ADDR, or behind SIGN_IN_TRUSTED_PROXIES proxies of ours the
# address the outermost one saw (messaging.sign_in.client_ip_address). Never a header alone:
# a client can write any X-Forwarded-For and start afresh with every guess.
AXES_CLIENT_IP_CALLABLE = "messaging.sign_in.client_ip_address"
SIGN_IN_TRUSTED_PROXIES = _env_count("SIGN_IN_TRUSTED_PROXIES", 0, minimum=0)

# A session ends SESSION_IDLE_MINUTES after its last request: each request moves the end, the
# session row written at most once a minute (messaging.sign_in.keep_session_alive).
SESSION_COOKIE_AGE = _env_count("SESSION_IDLE_MINUTES", 60) * 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = False

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("nb", _("Norwegian Bokmål"))]
# django-filter's empty choice: "Any" reads better than Django's dashes.
FILTERS_EMPTY_CHOICE_LABEL = _("Any")
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "Europe/Oslo")
FORMAT_MODULE_PATH = ["project.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Uploaded files (message attachments). Never served as static files: staff download them
# through a view that checks permissions.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

# Email: EMAIL_URL such as smtp://user:pass@host:587/?tls=True, console:, memory:, or
# anymail:<esp> for an email provider's API through django-anymail (anymail:sendgrid,
# anymail:mailgun, anymail:postmark, anymail:brevo, anymail:amazon_ses, ...), whose credentials
# come from ANYMAIL_* variables (see below).
# The default is the development sink that `make run` starts (manage.py mailsink).
_email_url = os.environ.get("EMAIL_URL", "smtp://127.0.0.1:8025")
MAILERS = {
    "default": _anymail_mailer(_email_url) if _email_url.startswith("anymail:") else _mailer(_email_url)
}
# django-anymail, from every ANYMAIL_<NAME> variable: the provider's credentials
# (ANYMAIL_SENDGRID_API_KEY, ANYMAIL_MAILGUN_API_KEY, ANYMAIL_POSTMARK_SERVER_TOKEN, ...) and
# ANYMAIL_WEBHOOK_SECRET ("user:password"), which the tracking webhooks require
# (/anymail/<esp>/tracking/; Mailgun also checks ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY).
ANYMAIL = {
    name.removeprefix("ANYMAIL_"): value for name, value in os.environ.items() if name.startswith("ANYMAIL_")
}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Messaging <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# huey: SqliteHuey under var/ by default; Redis when REDIS_URL is set.
_redis_url = os.environ.get("REDIS_URL")
HUEY = {
    "name": os.environ.get("HUEY_NAME", "messaging"),
    "immediate": env_bool("HUEY_IMMEDIATE", False),
    "utc": True,
    # Sending is CPU-bound Python: separate processes beat threads (GIL). A short maximum
    # polling delay lets idle workers join a large send quickly.
    "consumer": {
        "workers": int(os.environ.get("HUEY_WORKERS", "2")),
        "worker_type": os.environ.get("HUEY_WORKER_TYPE", "process"),
        "initial_delay": 0.05,
        "max_delay": 1.0,
    },
}
if _redis_url:
    HUEY |= {"huey_class": "huey.RedisHuey", "connection": {"url": _redis_url}}
    MESSAGING_RATE_LIMIT_REDIS_URL = _redis_url
else:
    HUEY |= {
        "huey_class": "huey.SqliteHuey",
        "filename": os.environ.get("HUEY_SQLITE_FILE", str(VAR_DIR / "huey.sqlite3")),
    }

# Messaging engine settings: their defaults live in messaging/conf.py; the environment may
# override the integer ones (see README "Configuration").
for _name in (
    "MESSAGING_RESEND_LIMIT",
    "MESSAGING_RECEIVER_RETENTION_DAYS",
    "MESSAGING_DELIVERY_HELPERS",
    "MESSAGING_LEASE_SECONDS",
    "MESSAGING_RETRY_BASE_SECONDS",
    "MESSAGING_RETRY_MAX_SECONDS",
    "MESSAGING_SWEEP_MINUTES",
    "MESSAGING_AUTO_PAUSE_WINDOW",
    "MESSAGING_AUTO_PAUSE_SAME_ERROR",
    "MESSAGING_HEARTBEAT_STALE_SECONDS",
    "MESSAGING_HEALTH_MAX_WAIT_SECONDS",
    "MESSAGING_SMTP_CONNECTIONS",
    "MESSAGING_DB_CONNECTIONS_PER_WORKER",
    "MESSAGING_WORKER_HOSTS",
    "MESSAGING_WEB_DB_CONNECTIONS",
    "MESSAGING_DATABASE_OUTAGE_SECONDS",
    "MESSAGING_TASK_RETRIES",
    "MESSAGING_TASK_RETRY_SECONDS",
    "MESSAGING_PREPARATION_BATCH_SIZE",
    "MESSAGING_PREPARATION_LEASE_SECONDS",
    "MESSAGING_BOUNCE_POLL_MINUTES",
    "MESSAGING_TEST_SENDS_PER_HOUR",
    "MESSAGING_ATTACHMENT_MAX_BYTES",
    "MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES",
    "MESSAGING_ATTACHMENTS_MAX_COUNT",
    "MESSAGING_DIGEST_WEEKDAY",
    "MESSAGING_DIGEST_POLL_MINUTES",
    "MESSAGING_DIGEST_ITEM_MAX_CHARS",
    "MESSAGING_PREFERENCE_LINK_MAX_AGE_DAYS",
    "MESSAGING_WEBHOOK_MAX_AGE_SECONDS",
):
    if os.environ.get(_name):
        globals()[_name] = int(os.environ[_name])
if os.environ.get("MESSAGING_AUTO_PAUSE_FAILURE_RATE"):
    MESSAGING_AUTO_PAUSE_FAILURE_RATE = float(os.environ["MESSAGING_AUTO_PAUSE_FAILURE_RATE"])
for _name in (
    "MESSAGING_SITE_URL",
    "MESSAGING_METRICS_TOKEN",
    "MESSAGING_BOUNCE_ADDRESS",
    "MESSAGING_BOUNCE_MAILBOX",
    "MESSAGING_ATTACHMENT_SCANNER",
    "MESSAGING_DIGEST_TIME",
):
    if os.environ.get(_name):
        globals()[_name] = os.environ[_name]
if os.environ.get("MESSAGING_ATTACHMENT_EXTENSIONS"):
    # Comma-separated: ".pdf,.docx,.png" (the dot may be left out)
    MESSAGING_ATTACHMENT_EXTENSIONS = [
        "." + name.strip().lstrip(".")
        for name in os.environ["MESSAGING_ATTACHMENT_EXTENSIONS"].split(",")
        if name.strip().lstrip(".")
    ]
if "MESSAGING_SMTP_PIPELINING" in os.environ:
    MESSAGING_SMTP_PIPELINING = env_bool("MESSAGING_SMTP_PIPELINING", True)
if os.environ.get("MESSAGING_NOTIFY_SENDER"):
    MESSAGING_NOTIFY_SENDER = os.environ["MESSAGING_NOTIFY_SENDER"].lower() not in ("0", "false", "no", "off")
if os.environ.get("MESSAGING_ALLOWED_SENDERS", "").strip():
    # A JSON list, or one sender a line (a display name may hold a comma: "Exams, Science" <…>).
    _senders = os.environ["MESSAGING_ALLOWED_SENDERS"].strip()
    if _senders.startswith("["):
        MESSAGING_ALLOWED_SENDERS = json.loads(_senders)
    else:
        MESSAGING_ALLOWED_SENDERS = [line.strip() for line in _senders.splitlines() if line.strip()]
if os.environ.get("MESSAGING_TRACKING_WEBHOOKS", "").strip():
    # Comma-separated anymail names ("mailgun,sendgrid"), or "none"; unset: the anymail mailer's.
    _webhooks = os.environ["MESSAGING_TRACKING_WEBHOOKS"].strip().lower()
    MESSAGING_TRACKING_WEBHOOKS = (
        []
        if _webhooks in ("none", "off")
        else [name.strip() for name in _webhooks.split(",") if name.strip()]
    )
if os.environ.get("MESSAGING_RATE_LIMITS"):
    # JSON, e.g. {"default": {"per_second": 14, "per_day": 50000}}
    MESSAGING_RATE_LIMITS = json.loads(os.environ["MESSAGING_RATE_LIMITS"])
# Where the development mail sink (manage.py mailsink) stores .eml files.
MESSAGING_MAIL_DIR = VAR_DIR / "mail"

# Content Security Policy: nothing inline, nothing from elsewhere.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.SELF],
    "object-src": [CSP.NONE],
}

SESSION_COOKIE_SECURE = not DEBUG and env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A 403 logs one line, not a traceback (project/logging_filters.py); 500s keep theirs.
    "filters": {"permission_denied": {"()": "project.logging_filters.PermissionDeniedWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "messaging": {"handlers": ["console"], "level": "INFO"},
        # Level and handlers stay Django's (it propagates to the "django" logger).
        "django.request": {"filters": ["permission_denied"]},
    },
}

"""Every MESSAGING_* setting with its default, in one place.

A project that sets none of them works; `project/settings.py` only maps environment variables
onto the ones an operator tunes. Read settings through these functions (not at import time), so
tests and `override_settings` see the current value.
"""

from __future__ import annotations

from django.conf import settings

ATTACHMENT_EXTENSIONS = (
    ".pdf", ".txt", ".csv", ".ics", ".png", ".jpg", ".jpeg", ".gif",
    ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".zip",
)  # fmt: skip

DEFAULTS = {
    # How long a delivering worker keeps trying a write while the database is unavailable
    # (locked, restarting, unreachable) before its delivery task fails and huey runs it again.
    "MESSAGING_DATABASE_OUTAGE_SECONDS": 60,
    # A delivery task that failed (the database was gone for longer than the above) is run
    # again after this many seconds, up to this many times; then the sweeper takes over.
    "MESSAGING_TASK_RETRY_SECONDS": 5,
    "MESSAGING_TASK_RETRIES": 60,
    # Preparing creates receivers in batches of this many, each committed on its own, so no
    # writer waits for more than one batch (SQLite has one write lock for the whole database).
    "MESSAGING_PREPARATION_BATCH_SIZE": 500,
    # A preparation (or digest assembly) renews its lease with every batch it commits; the
    # sweeper takes over one whose lease ran out (its worker died). Must exceed the time one
    # batch takes to render, or a slow preparation is taken over again and again.
    "MESSAGING_PREPARATION_LEASE_SECONDS": 300,
    # Failures after which a receiver is `error` instead of `failed` (SPEC §2).
    "MESSAGING_RESEND_LIMIT": 2,
    # How long a worker owns the receivers it claimed. Must cover at least two sends
    # (checked at start-up against the mail server's timeout: messaging.checks).
    "MESSAGING_LEASE_SECONDS": 300,
    # First automatic retry after a temporary failure; doubles each time, capped below.
    "MESSAGING_RETRY_BASE_SECONDS": 60,
    "MESSAGING_RETRY_MAX_SECONDS": 3600,
    # How often the sweeper looks for due retries, lost tasks, dead workers and unblocked
    # mail servers (a huey periodic task; whole minutes, 1-59).
    "MESSAGING_SWEEP_MINUTES": 1,
    # Extra delivery tasks queued per send, so that idle workers join in.
    "MESSAGING_DELIVERY_HELPERS": 1,
    # Nightly retention: receivers older than this many days are deleted (None: never).
    "MESSAGING_RECEIVER_RETENTION_DAYS": None,
    # The domain of each receiver's Message-ID.
    "MESSAGING_MESSAGE_ID_DOMAIN": "messaging.local",
    # Auto-pause: a delivering worker pauses the message when more than this share of its last
    # WINDOW attempts failed, or the same error came SAME_ERROR times in a row (0: rule off).
    "MESSAGING_AUTO_PAUSE_WINDOW": 50,
    "MESSAGING_AUTO_PAUSE_FAILURE_RATE": 0.2,
    "MESSAGING_AUTO_PAUSE_SAME_ERROR": 10,
    # Email the staff member who sent a message when it finishes with failures, is blocked,
    # paused automatically or expires.
    "MESSAGING_NOTIFY_SENDER": True,
    # The address staff reach this site at, for links in emails (status page of a message).
    "MESSAGING_SITE_URL": "http://localhost:8000",
    # /metrics answers a request carrying "Authorization: Bearer <token>" (or a staff login).
    "MESSAGING_METRICS_TOKEN": "",
    # A consumer whose heartbeat is older than this is counted as gone.
    "MESSAGING_HEARTBEAT_SECONDS": 15,
    "MESSAGING_HEARTBEAT_STALE_SECONDS": 120,
    # messaging_health fails when due work (a scheduled message past its time, a queued message,
    # a receiver waiting to be sent) has waited longer than this.
    "MESSAGING_HEALTH_MAX_WAIT_SECONDS": 900,
    # SMTP sessions each delivery worker keeps open and sends over at once, so that a relay
    # taking 100 ms per message does not serialise a send. Relays cap connections per client:
    # keep (workers x this) below your relay's cap.
    "MESSAGING_SMTP_CONNECTIONS": 16,
    # Send MAIL FROM, RCPT TO and DATA in one write when the relay offers PIPELINING (RFC 2920):
    # two round trips per email instead of four. False for a relay that offers it but mishandles it.
    "MESSAGING_SMTP_PIPELINING": True,
    # Database connections one huey worker may hold while it delivers: its own, and one per
    # lane, so it delivers over min(MESSAGING_SMTP_CONNECTIONS, this - 1) lanes (at least one).
    # The default gives each of the default 16 lanes its connection.
    "MESSAGING_DB_CONNECTIONS_PER_WORKER": 17,
    # The deployment's shape, for the system check that compares the database connections it
    # may open with PostgreSQL's max_connections (messaging.checks, `manage.py check --database
    # default`, and at every `migrate`): how many run_huey consumers share the database (one per
    # worker host; count each if a host runs several), each with HUEY["consumer"]["workers"]
    # workers; and how many connections everything else may hold at once: the web server's
    # processes x threads on every web host, cron jobs, backups, psql.
    "MESSAGING_WORKER_HOSTS": 1,
    "MESSAGING_WEB_DB_CONNECTIONS": 10,
    # Sending limits per mailer (a key of MAILERS), held across every consumer and host, e.g.
    # {"default": {"per_second": 14, "per_day": 50000, "per_domain": {"per_minute": 100}}}.
    # Windows: per_second, per_minute, per_hour, per_day; per_domain applies to each recipient
    # domain separately. Empty: no limit.
    "MESSAGING_RATE_LIMITS": {},
    # Where the rate limits keep their shared state: a Redis URL, or None for the database.
    "MESSAGING_RATE_LIMIT_REDIS_URL": None,
    # Bounces from your own relay. The envelope sender (Return-Path) of each email: with an
    # address like "bounces@bounces.example.edu", each receiver's email goes out from
    # "bounces+r<id>-<signature>@bounces.example.edu" (VERP), so a bounce names its receiver even
    # when it quotes nothing of the original. Empty: the From address, and bounces are matched by
    # the Message-ID they quote.
    "MESSAGING_BOUNCE_ADDRESS": "",
    # Where those bounces arrive: maildir:///path, mbox:///path, imap(s)://user:pass@host/INBOX.
    # Read every BOUNCE_POLL_MINUTES by the consumer and by `manage.py messaging_read_bounces`.
    "MESSAGING_BOUNCE_MAILBOX": "",
    "MESSAGING_BOUNCE_POLL_MINUTES": 5,
    # The From addresses staff may choose when composing ("Name <address>" or an address;
    # checked at start-up: messaging.checks); empty: only DEFAULT_FROM_EMAIL, which is always
    # allowed and listed first.
    "MESSAGING_ALLOWED_SENDERS": [],
    # Attachments of a composed message: the most bytes per file and per message, how many, and
    # which file name extensions (lower case, with the dot) are accepted.
    "MESSAGING_ATTACHMENT_MAX_BYTES": 10 * 1024 * 1024,
    "MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES": 20 * 1024 * 1024,
    "MESSAGING_ATTACHMENTS_MAX_COUNT": 10,
    "MESSAGING_ATTACHMENT_EXTENSIONS": ATTACHMENT_EXTENSIONS,
    # A dotted path to a callable(uploaded_file) that raises django.core.exceptions.ValidationError
    # to refuse a file (a virus scanner, for example); None: no scan.
    "MESSAGING_ATTACHMENT_SCANNER": None,
    # Test sends a staff member may make per hour (to any address); 0: test sends off, None: no limit.
    "MESSAGING_TEST_SENDS_PER_HOUR": 20,
    # Digests go out at this local time ("HH:MM", in each user's time zone, else TIME_ZONE);
    # weekly ones on this weekday (0 Monday ... 6 Sunday). The task that sends them runs every
    # DIGEST_POLL_MINUTES (whole minutes, 1-59).
    "MESSAGING_DIGEST_TIME": "07:00",
    "MESSAGING_DIGEST_WEEKDAY": 0,
    "MESSAGING_DIGEST_POLL_MINUTES": 5,
    # A digest item longer than this (plain-text characters) is shortened, with a link to read it all.
    "MESSAGING_DIGEST_ITEM_MAX_CHARS": 1500,
    # How long the preference and unsubscribe links in emails work, in days.
    "MESSAGING_PREFERENCE_LINK_MAX_AGE_DAYS": 90,
    # The providers whose delivery webhooks (/anymail/<esp>/tracking/) exist, as anymail names
    # them ("mailgun", "sendgrid", "amazon_ses", ...). None: the provider of an anymail mailer
    # (EMAIL_URL=anymail:<esp>), none with SMTP; a list: exactly those ([]: none).
    "MESSAGING_TRACKING_WEBHOOKS": None,
    # A signed webhook whose signature is older than this (or this far in the future) is
    # refused; providers retry with a fresh signature, and a repeat of an event changes nothing.
    "MESSAGING_WEBHOOK_MAX_AGE_SECONDS": 3600,
}


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])


def resend_limit() -> int:
    return get("MESSAGING_RESEND_LIMIT")


def lease_seconds() -> int:
    return get("MESSAGING_LEASE_SECONDS")


def database_outage_seconds() -> float:
    return get("MESSAGING_DATABASE_OUTAGE_SECONDS")


def task_retries() -> tuple[int, int]:
    """(times, seconds apart) for huey's retries of a failed delivery task."""
    return get("MESSAGING_TASK_RETRIES"), get("MESSAGING_TASK_RETRY_SECONDS")


def preparation_batch_size() -> int:
    return get("MESSAGING_PREPARATION_BATCH_SIZE")


def preparation_lease_seconds() -> int:
    return get("MESSAGING_PREPARATION_LEASE_SECONDS")


def retry_base_seconds() -> int:
    return get("MESSAGING_RETRY_BASE_SECONDS")


def retry_max_seconds() -> int:
    return get("MESSAGING_RETRY_MAX_SECONDS")


def sweep_minutes() -> int:
    return get("MESSAGING_SWEEP_MINUTES")


def delivery_helpers() -> int:
    return get("MESSAGING_DELIVERY_HELPERS")


def retention_days() -> int | None:
    return get("MESSAGING_RECEIVER_RETENTION_DAYS")


def message_id_domain() -> str:
    return get("MESSAGING_MESSAGE_ID_DOMAIN")


def auto_pause_window() -> int:
    return get("MESSAGING_AUTO_PAUSE_WINDOW")


def auto_pause_failure_rate() -> float:
    return get("MESSAGING_AUTO_PAUSE_FAILURE_RATE")


def auto_pause_same_error() -> int:
    return get("MESSAGING_AUTO_PAUSE_SAME_ERROR")


def notify_sender() -> bool:
    return get("MESSAGING_NOTIFY_SENDER")


def site_url() -> str:
    return get("MESSAGING_SITE_URL").rstrip("/")


def metrics_token() -> str:
    return get("MESSAGING_METRICS_TOKEN")


def heartbeat_seconds() -> int:
    return get("MESSAGING_HEARTBEAT_SECONDS")


def heartbeat_stale_seconds() -> int:
    return get("MESSAGING_HEARTBEAT_STALE_SECONDS")


def health_max_wait_seconds() -> int:
    return get("MESSAGING_HEALTH_MAX_WAIT_SECONDS")


def smtp_connections() -> int:
    return get("MESSAGING_SMTP_CONNECTIONS")


def smtp_pipelining() -> bool:
    return get("MESSAGING_SMTP_PIPELINING")


def db_connections_per_worker() -> int:
    return get("MESSAGING_DB_CONNECTIONS_PER_WORKER")


def delivery_lanes() -> int:
    """Lanes one worker delivers a message over: an SMTP session and a database connection
    each, besides the worker's own connection, within MESSAGING_DB_CONNECTIONS_PER_WORKER."""
    return max(1, min(smtp_connections(), db_connections_per_worker() - 1))


def worker_hosts() -> int:
    return get("MESSAGING_WORKER_HOSTS")


def web_db_connections() -> int:
    return get("MESSAGING_WEB_DB_CONNECTIONS")


def rate_limits() -> dict:
    return get("MESSAGING_RATE_LIMITS")


def rate_limit_redis_url() -> str | None:
    return get("MESSAGING_RATE_LIMIT_REDIS_URL")


def bounce_address() -> str:
    return get("MESSAGING_BOUNCE_ADDRESS")


def bounce_mailbox() -> str:
    return get("MESSAGING_BOUNCE_MAILBOX")


def bounce_poll_minutes() -> int:
    return get("MESSAGING_BOUNCE_POLL_MINUTES")


def allowed_senders() -> list[str]:
    """DEFAULT_FROM_EMAIL first, then the configured ones (without repeats)."""
    senders = [settings.DEFAULT_FROM_EMAIL, *get("MESSAGING_ALLOWED_SENDERS")]
    return list(dict.fromkeys(sender for sender in senders if sender))


def attachment_max_bytes() -> int:
    return get("MESSAGING_ATTACHMENT_MAX_BYTES")


def attachments_max_total_bytes() -> int:
    return get("MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES")


def attachments_max_count() -> int:
    return get("MESSAGING_ATTACHMENTS_MAX_COUNT")


def attachment_extensions() -> list[str]:
    return [extension.lower() for extension in get("MESSAGING_ATTACHMENT_EXTENSIONS")]


def attachment_scanner() -> str | None:
    return get("MESSAGING_ATTACHMENT_SCANNER")


def test_sends_per_hour() -> int:
    return get("MESSAGING_TEST_SENDS_PER_HOUR")


def digest_time() -> tuple[int, int]:
    """(hour, minute) of MESSAGING_DIGEST_TIME (checked at start-up: messaging.checks)."""
    hour, minute = get("MESSAGING_DIGEST_TIME").split(":")
    return int(hour), int(minute)


def digest_weekday() -> int:
    return get("MESSAGING_DIGEST_WEEKDAY")


def digest_poll_minutes() -> int:
    return get("MESSAGING_DIGEST_POLL_MINUTES")


def digest_item_max_chars() -> int:
    return get("MESSAGING_DIGEST_ITEM_MAX_CHARS")


def preference_link_max_age_days() -> int:
    return get("MESSAGING_PREFERENCE_LINK_MAX_AGE_DAYS")


def tracking_webhooks() -> frozenset[str]:
    configured = get("MESSAGING_TRACKING_WEBHOOKS")
    if configured is not None:
        return frozenset(configured)
    backend = str(getattr(settings, "MAILERS", {}).get("default", {}).get("BACKEND", ""))
    if backend.startswith("anymail.backends."):
        return frozenset({backend.split(".")[2]})
    return frozenset()


def webhook_max_age_seconds() -> int:
    return get("MESSAGING_WEBHOOK_MAX_AGE_SECONDS")

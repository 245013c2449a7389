"""Every MESSAGING_* setting with its default, in one place.

A project that sets none of them works; `project/settings.py` only maps environment variables
onto the ones an operator tunes. Read settings through these functions (not at import time), so
tests and `override_settings` see the current value.
"""

from __future__ import annotations

from django.conf import settings

DEFAULTS = {
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
}


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])


def resend_limit() -> int:
    return get("MESSAGING_RESEND_LIMIT")


def lease_seconds() -> int:
    return get("MESSAGING_LEASE_SECONDS")


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

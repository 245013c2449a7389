"""Who may post to the delivery webhooks, decided before anything is parsed, failing closed.

A post is refused unless ANYMAIL_WEBHOOK_SECRET is set and the post carries it as HTTP basic
auth. A provider that signs its webhooks must have its key configured (anymail then verifies the
signature), and where the signature carries a time, an old one is refused. anymail checks basic
auth and the signature again; these rules stand even where anymail would only warn (no secret)."""

from __future__ import annotations

import json
import time

from anymail.utils import get_request_basic_auth
from django.conf import settings
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from django.utils.dateparse import parse_datetime

from messaging import conf

# The ANYMAIL setting holding the key each signing provider's webhook is verified with.
SIGNING_KEYS = {
    "mailgun": "MAILGUN_WEBHOOK_SIGNING_KEY",
    "sendgrid": "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY",
    "mailersend": "MAILERSEND_SIGNING_SECRET",
    "mandrill": "MANDRILL_WEBHOOK_KEY",
    "postal": "POSTAL_WEBHOOK_KEY",
}
# Clocks differ a little; a signature from further in the future than this is not believed.
FUTURE_SKEW_SECONDS = 300


def anymail_setting(name: str):
    """ANYMAIL["<NAME>"], or the flat ANYMAIL_<NAME> setting anymail also reads."""
    return getattr(settings, "ANYMAIL", {}).get(name) or getattr(settings, f"ANYMAIL_{name}", None)


def webhook_secrets() -> list[str]:
    secret = anymail_setting("WEBHOOK_SECRET") or []
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return [item for item in secrets if isinstance(item, str) and ":" in item]


def refusal(request: HttpRequest, provider: str) -> str | None:
    """Why this request may not touch anything, or None when it may go on to anymail."""
    secrets = webhook_secrets()
    if not secrets:
        return "ANYMAIL_WEBHOOK_SECRET is not set"
    given = get_request_basic_auth(request)
    if given is None or not any(constant_time_compare(given, secret) for secret in secrets):
        return "missing or wrong basic auth"
    key_name = SIGNING_KEYS.get(provider)
    if key_name and not anymail_setting(key_name):
        return f"ANYMAIL_{key_name} is not set"
    if request.method == "POST" and provider in _SIGNED_TIMES:
        return _stale(_SIGNED_TIMES[provider](request))
    return None


def _stale(signed_at: float | None) -> str | None:
    if signed_at is None:
        return "no signature time"
    age = time.time() - signed_at
    if age > conf.webhook_max_age_seconds() or age < -FUTURE_SKEW_SECONDS:
        return f"signature time {age:.0f} s off"
    return None


def _mailgun_time(request: HttpRequest) -> float | None:
    if request.content_type == "application/json":
        try:
            value = json.loads(request.body)["signature"]["timestamp"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
    else:
        value = request.POST.get("timestamp")
    return _seconds(value)


def _sendgrid_time(request: HttpRequest) -> float | None:
    return _seconds(request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp"))


def _amazon_ses_time(request: HttpRequest) -> float | None:
    """SNS's Timestamp (anymail verifies no SNS signature, so this only limits replays of a
    captured post; SNS gives up retrying within an hour)."""
    try:
        stamp = parse_datetime(str(json.loads(request.body)["Timestamp"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return stamp.timestamp() if stamp is not None and stamp.tzinfo is not None else None


def _seconds(value) -> float | None:
    try:
        seconds = float(str(value))
    except (TypeError, ValueError):
        return None
    return seconds if seconds == seconds and abs(seconds) < 1e11 else None  # NaN, absurd


_SIGNED_TIMES = {"mailgun": _mailgun_time, "sendgrid": _sendgrid_time, "amazon_ses": _amazon_ses_time}

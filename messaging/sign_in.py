"""Sign-in that resists guessing: django-axes locks a username + address pair after repeated
failures (settings AXES_*); this module tells axes who the client is, answers a locked-out
sign-in with a page of our own, and writes failures and lockouts to the audit trail. And a
signed-in session ends SESSION_COOKIE_AGE after its last request (keep_session_alive).

Imported by MessagingConfig.ready(), which connects the receivers below.
"""

from __future__ import annotations

import ipaddress
import time

from axes.helpers import get_client_ip_address, get_cool_off
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from messaging.models import AuditEvent

# A session's end moves with each request, but its row is written at most this often: a page
# polling every 2 s would otherwise write the session table (SQLite's one writer) every time.
SESSION_REFRESH_SECONDS = 60
_REFRESHED = "messaging_session_refreshed"


def keep_session_alive(get_response):
    """Middleware (after SessionMiddleware): moves a signed-in session's end to
    SESSION_COOKIE_AGE from now, at most once a SESSION_REFRESH_SECONDS. So a session idle for
    SESSION_IDLE_MINUTES ends (give or take that minute); one in use does not."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        session = getattr(request, "session", None)
        signed_in = session is not None and session.session_key and not session.is_empty()
        if signed_in and time.time() - session.get(_REFRESHED, 0) >= SESSION_REFRESH_SECONDS:
            session[_REFRESHED] = int(time.time())  # modified: SessionMiddleware saves it
        return response

    return middleware


@receiver(user_logged_in, dispatch_uid="messaging.sign_in.logged_in")
def on_signed_in(sender, request: HttpRequest | None, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[_REFRESHED] = int(time.time())  # a new session ends an idle time from now


def client_ip_address(request: HttpRequest) -> str | None:
    """The address a sign-in comes from (AXES_CLIENT_IP_CALLABLE).

    REMOTE_ADDR, unless SIGN_IN_TRUSTED_PROXIES says how many proxies of ours stand in front:
    then the X-Forwarded-For entry that many from the right, the one our outermost proxy
    added. Entries further left come from the client and can be forged to dodge the lockout."""
    proxies = getattr(settings, "SIGN_IN_TRUSTED_PROXIES", 0)
    remote = request.META.get("REMOTE_ADDR")
    if not proxies:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if len(forwarded) < proxies:
        # Not what our proxies send: count by the proxy's address, which errs towards locking.
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-proxies]))
    except ValueError:
        return remote


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The page a locked-out sign-in gets (AXES_LOCKOUT_CALLABLE), on /login/ and /admin/ alike.

    The lock lasts the cool-off after the latest failure, and every attempt while locked is a
    failure too (axes' AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT), so this attempt starts
    the wait again."""
    cool_off = get_cool_off(request)
    context = {
        "cool_off_minutes": round(cool_off.total_seconds() / 60) if cool_off else None,
        "unlocks_at": request.axes_attempt_time + cool_off if cool_off else None,
    }
    return render(request, "registration/locked_out.html", context, status=settings.AXES_HTTP_RESPONSE_CODE)


def _sign_in_details(request: HttpRequest | None, username: str | None) -> dict:
    # Never the password: Django hands receivers a masked copy, and only these keys are kept.
    return {
        "username": username,
        "ip_address": get_client_ip_address(request) if request is not None else None,
        "path": request.path if request is not None else None,
    }


def _account(username: str | None):
    if not username:
        return None
    user_model = get_user_model()
    return user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()


@receiver(user_login_failed, dispatch_uid="messaging.sign_in.failed")
def on_sign_in_failed(sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
    username = credentials.get(get_user_model().USERNAME_FIELD)
    AuditEvent.objects.create(
        action=AuditEvent.Action.SIGN_IN_FAILED,
        actor=_account(username),
        details=_sign_in_details(request, username),
    )


@receiver(user_locked_out, dispatch_uid="messaging.sign_in.locked_out")
def on_locked_out(sender, request: HttpRequest, username: str | None, **kwargs) -> None:
    """Sent by axes for the attempt that reaches the limit and for each one while locked."""
    cool_off = get_cool_off(request)
    AuditEvent.objects.create(
        action=AuditEvent.Action.LOCKED_OUT,
        actor=_account(username),
        details={
            **_sign_in_details(request, username),
            "failures": getattr(request, "axes_failures_since_start", None),
            "cool_off_minutes": round(cool_off.total_seconds() / 60) if cool_off else None,
        },
    )

"""Operations: the staff page of the engine's health, and /metrics for Prometheus.

/metrics answers a request carrying "Authorization: Bearer <MESSAGING_METRICS_TOKEN>" (when that
setting is not empty), or a signed-in active staff user with the view permission. Anyone else
gets 401 (with WWW-Authenticate), or 403 when signed in without the right to see it.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from messaging import conf
from messaging.models import Message
from messaging.operations import health
from messaging.operations import metrics as prometheus
from messaging.staff_pages import VIEW, render_page, staff_permission_required

POLL_SECONDS = 5


@staff_permission_required(VIEW)
@require_GET
def operations(request: HttpRequest) -> HttpResponse:
    report = health.health_report()
    context = {
        "report": report,
        "poll_seconds": POLL_SECONDS,
        "message_counts": [
            (status, Message.Status(status).label, count) for status, count in report.message_counts.items()
        ],
        "oldest_waiting": health.duration(report.oldest_waiting_seconds or 0),
        "overdue": health.duration(report.overdue_seconds),
    }
    return render_page(request, "messaging/operations/operations.html", context, "figures")


def _bearer_token(request: HttpRequest) -> str | None:
    """The Bearer token of the Authorization header; None without one."""
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _unauthorized(error: str | None = None) -> HttpResponse:
    response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain; charset=utf-8")
    challenge = 'Bearer realm="metrics"'
    response["WWW-Authenticate"] = f'{challenge}, error="{error}"' if error else challenge
    return response


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    expected = conf.metrics_token()
    given = _bearer_token(request)
    token_ok = bool(expected) and given is not None and hmac.compare_digest(given.encode(), expected.encode())
    user = request.user
    staff_ok = user.is_authenticated and user.is_active and user.is_staff and user.has_perm(VIEW)
    if not (token_ok or staff_ok):
        if given is not None:
            return _unauthorized("invalid_token")
        if not user.is_authenticated:
            return _unauthorized()
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(prometheus.render(), content_type=CONTENT_TYPE_LATEST)

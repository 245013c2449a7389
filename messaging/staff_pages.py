"""What every staff page shares: the permission each needs, the check, and answering htmx.

Every staff view is wrapped in `staff_permission_required`: anonymous users are sent to the login
page, signed-in users who are not active staff with the permission get 403 and no data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect

from messaging.models import Message

VIEW = "messaging.view_message"

COMPOSE = "messaging.compose_message"

SEND = "messaging.send_message"

RESEND = "messaging.resend_message"


def staff_permission_required(*perms: str) -> Callable:
    """Active staff with every permission in `perms`; else login redirect (anonymous) or 403."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                if request.htmx:
                    return HttpResponseClientRedirect(f"{reverse(settings.LOGIN_URL)}?next={request.path}")
                return redirect_to_login(request.get_full_path())
            if not (user.is_active and user.is_staff and user.has_perms(perms)):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapped.required_permissions = perms
        return wrapped

    return decorator


def wants_fragment(request: HttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def render_page(
    request: HttpRequest, template: str, context: dict, partial: str | None = None, status: int = 200
) -> HttpResponse:
    """The full page, or only `partial` of it for htmx requests (same template, same markup)."""
    name = f"{template}#{partial}" if partial and wants_fragment(request) else template
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def redirect_to(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def status_url(message: Message) -> str:
    return reverse("messaging:message_status", args=[message.pk])


def edit_url(message: Message) -> str:
    return reverse("messaging:message_edit", args=[message.pk])

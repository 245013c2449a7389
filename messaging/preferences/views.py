"""Recipients' own pages (any user, never staff-only): how they get each context type, signed
in or through the signed link in their emails; one-click unsubscribe (RFC 8058); reading a
digest item in full. Each page is in the recipient's language, whatever the browser's.

A signed link (messaging.preferences.links) names its purpose and its user and nothing else: each page
takes only links of its own purpose, touches only that user's settings (or shows only that
user's receiver), whoever opens it, and refuses a link made before the user's links were revoked.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from messaging.engine import recipients, rendering
from messaging.engine.outgoing import ONE_CLICK
from messaging.models import MessageReceiver
from messaging.preferences import context_types, links
from messaging.preferences import modes as preferences
from messaging.preferences.forms import PreferencesForm

User = get_user_model()
ONE_CLICK_FIELD, ONE_CLICK_VALUE = ONE_CLICK.split("=", 1)


@login_required
@require_http_methods(["GET", "POST"])
def manage(request: HttpRequest) -> HttpResponse:
    return _manage(request, request.user, reverse("preferences:manage"), signed=False)


@require_http_methods(["GET", "POST"])
def manage_signed(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user = _user_of(links.load_manage(token))
    except links.LinkInvalid as exc:
        return _bad_link(request, exc)
    return _manage(request, user, request.path, signed=True)


@csrf_exempt  # RFC 8058: mail programs POST without a session; the signed link is the proof
@require_http_methods(["GET", "HEAD", "POST"])  # link scanners also ask with HEAD
def one_click(request: HttpRequest, token: str) -> HttpResponse:
    """GET only asks (mail programs and link scanners fetch links); POST with the RFC 8058 body
    turns the link's types off, again and again with the same answer."""
    try:
        link = links.load_one_click(token)
        user = _user_of(link)
    except links.LinkInvalid as exc:
        return _bad_link(request, exc)
    language = recipients.preferred_language(user)
    types = [context_types.get(key) for key in link.context_types]
    context = {
        "types": [config for config in types if not config.enforced],
        # The sign-in page, not a signed one: an unsubscribe link (in a header that mail
        # providers and link scanners read) must not open the whole preference page.
        "manage_url": reverse("preferences:manage"),
        "field": ONE_CLICK_FIELD,
        "value": ONE_CLICK_VALUE,
    }
    if request.method != "POST":
        return _render(request, "messaging/preferences/one_click.html", context, language)
    if request.POST.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
        with translation.override(language):
            text = gettext("This address unsubscribes only with the form field %(field)s.") % {
                "field": ONE_CLICK
            }
        return HttpResponseBadRequest(text, content_type="text/plain; charset=utf-8")
    preferences.turn_off(user, link.context_types)
    return _render(request, "messaging/preferences/one_click_done.html", context, language)


@require_GET
def read(request: HttpRequest, token: str) -> HttpResponse:
    try:
        link = links.load_read(token)
        receiver = _readable_receiver(link.receiver_id, _user_of(link))
    except links.LinkInvalid as exc:
        return _bad_link(request, exc)
    context = {"receiver": receiver, "content": rendering.body_of(receiver.message_content_html)}
    return _render(
        request, "messaging/preferences/read.html", context, recipients.resolve_language(receiver.language)
    )


def invalid_link(request: HttpRequest, rest: str) -> HttpResponse:
    """Anything else under /preferences/: most often a link a mail program broke or cut."""
    return _bad_link(request, links.LinkInvalid(rest))


def _manage(request: HttpRequest, user, action: str, *, signed: bool) -> HttpResponse:
    language = recipients.preferred_language(user)
    with translation.override(language):
        form = PreferencesForm(request.POST or None, choices=preferences.choices_of(user))
        if request.method == "POST" and form.is_valid() and _save(user, form):
            messages.success(request, gettext("Saved. Your email settings are changed."))
            return redirect(action)
    context = {"form": form, "rows": form.rows(), "action": action, "person": user, "signed": signed}
    return _render(request, "messaging/preferences/manage.html", context, language)


def _save(user, form: PreferencesForm) -> bool:
    """Each chosen mode; False (with the reason on its row) when one was refused. The others are
    saved: a row refused (a type staff made enforced while the page was open) spoils no other."""
    for context_type, mode in form.chosen().items():
        try:
            preferences.set_mode(user, context_type, mode)
        except preferences.PreferenceRefused:
            form.refuse(context_type, gettext("This choice is not possible for these messages any more."))
    return not form.errors


def _user_of(link: links.Link):
    """The active user `link` was made for, unless their links were revoked since it was made."""
    user = User.objects.filter(pk=link.user_id, is_active=True).select_related("messaging_profile").first()
    if user is None:
        raise links.LinkInvalid("No such active user.")
    links.check_not_revoked(link, user)
    return user


def _readable_receiver(receiver_id: int, user) -> MessageReceiver:
    receiver = (
        MessageReceiver.objects.filter(pk=receiver_id, user=user)
        .only("subject", "message_content_html", "message_content_plain", "language")
        .first()
    )
    if receiver is None:
        raise links.LinkInvalid("No such receiver of this user.")
    return receiver


def _bad_link(request: HttpRequest, exc: links.LinkInvalid) -> HttpResponse:
    if isinstance(exc, links.LinkRevoked):
        reason, language = "revoked", recipients.preferred_language(exc.user)
    else:
        reason = "expired" if isinstance(exc, links.LinkExpired) else "invalid"
        # Whose link it was is not known (or not to be trusted): the browser's language.
        language = recipients.resolve_language(translation.get_language() or settings.LANGUAGE_CODE)
    context = {"reason": reason, "manage_url": reverse("preferences:manage")}
    return _render(request, "messaging/preferences/bad_link.html", context, language, status=400)


def _render(
    request: HttpRequest, template: str, context: dict, language: str, status: int = 200
) -> HttpResponse:
    with translation.override(language):
        response = render(request, template, context, status=status)
    response["Content-Language"] = language
    return response

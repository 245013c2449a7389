"""Staff web UI (SPEC §3): thin function views over selectors and services.

Every view is wrapped in `staff_permission_required`: anonymous users are sent to the login
page, signed-in users who are not active staff with the permission get 403 and no data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from messaging import conf
from messaging.compose import attachments as message_attachments
from messaging.compose import composing
from messaging.compose.forms import (
    AttachmentsForm,
    MessageForm,
    RecipientSelectionForm,
    SendForm,
    TestSendForm,
)
from messaging.engine import controlling, rendering, resending, status
from messaging.feedback import suppressions
from messaging.models import Message, MessageReceiver
from messaging.preferences import context_types
from messaging.tracking import selectors, status_labels
from messaging.tracking.tables import MessageTable, ReceiverTable

VIEW = "messaging.view_message"
COMPOSE = "messaging.compose_message"
SEND = "messaging.send_message"
RESEND = "messaging.resend_message"

MESSAGES_PER_PAGE = 25
RECEIVERS_PER_PAGE = 25
# LazyPaginator does not count rows, so page numbers are bounded here instead.
MAX_PAGE = 10**9
# htmx stops polling when a response has this status code.
HTMX_STOP_POLLING = 286
# The status page refreshes itself this often while sending, and while retries are pending.
LIVE_POLL_SECONDS = 2
RETRY_POLL_SECONDS = 15


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


# Helpers ------------------------------------------------------------------------------------------


def _wants_fragment(request: HttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _render(
    request: HttpRequest, template: str, context: dict, partial: str | None = None, status: int = 200
) -> HttpResponse:
    """The full page, or only `partial` of it for htmx requests (same template, same markup)."""
    name = f"{template}#{partial}" if partial and _wants_fragment(request) else template
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _status_url(message: Message) -> str:
    return reverse("messaging:message_status", args=[message.pk])


def _edit_url(message: Message) -> str:
    return reverse("messaging:message_edit", args=[message.pk])


def _read_only(request: HttpRequest, message: Message) -> HttpResponse:
    messages.info(request, _("This message has been sent and can no longer be changed."))
    return _redirect(request, _status_url(message))


def _compose_context(
    request: HttpRequest,
    form: MessageForm,
    message: Message | None,
    attachments_form: AttachmentsForm | None = None,
) -> dict:
    selection = RecipientSelectionForm(
        {"users": form["users"].value() or [], "groups": form["groups"].value() or []}
    )
    user_ids, group_ids = selection.ids("users"), selection.ids("groups")
    important = (
        bool(form["ignore_preferences"].value())
        if form.can_mark_important
        else bool(message and message.ignore_preferences)
    )
    return {
        "form": form,
        "message": message,
        "attachments_form": attachments_form or AttachmentsForm(message=message),
        "chosen_users": selectors.users_by_ids(user_ids),
        "chosen_groups": selectors.groups_by_ids(group_ids),
        "summary": selectors.recipient_summary(
            user_ids, group_ids, _summary_context_type(form["context_type"].value()), important
        ),
        "placeholders": [(name, label) for name, (label, _fill) in rendering.PLACEHOLDERS.items()],
        "default_language": settings.LANGUAGE_CODE,
    }


def _summary_context_type(value) -> str:
    """A composable context type, else "" (the summary then leaves delivery modes out)."""
    return value if value in {key for key, _label in context_types.composable_choices()} else ""


def _compose(request: HttpRequest, message: Message | None) -> HttpResponse:
    form = MessageForm(request.POST or None, message=message, actor=request.user)
    attachments_form = AttachmentsForm(request.POST or None, request.FILES or None, message=message)
    # Both forms are checked, so that every error shows at once.
    if request.method == "POST" and all([form.is_valid(), attachments_form.is_valid()]):
        try:
            with transaction.atomic():  # the draft and its files are saved together, or neither
                saved = form.save(request.user)
                attachments_form.save(saved)
        except (composing.DraftChanged, message_attachments.NotADraft):
            # Keep what was typed on screen (it can be copied into a new draft); save nothing.
            form.add_error(
                None, _("This message was sent while you were editing it; your changes were not saved.")
            )
            return _render(
                request,
                "messaging/compose.html",
                _compose_context(request, form, message, attachments_form),
                "compose_form",
                # htmx swaps only 2xx answers: the form with its explanation must replace the old one.
                200 if request.htmx else 409,
            )
        except message_attachments.LimitReached as refused:  # another save came first
            attachments_form.add_error("attachments", refused)
            return _render(
                request,
                "messaging/compose.html",
                _compose_context(request, form, message, attachments_form),
                "compose_form",
            )
        messages.success(request, _("Draft saved."))
        if request.POST.get("next") == "preview":
            return _redirect(request, reverse("messaging:message_preview", args=[saved.pk]))
        return _redirect(request, _edit_url(saved))
    return _render(
        request,
        "messaging/compose.html",
        _compose_context(request, form, message, attachments_form),
        "compose_form",
    )


def _status_context(request: HttpRequest, message: Message) -> dict:
    counts = status.published_counts(message)
    outcomes = selectors.outcome_counts(message)
    receivers = selectors.receiver_filter(message, request.GET)
    can_resend = request.user.has_perm(RESEND) and resending.resend_allowed(message)
    table = ReceiverTable(receivers.qs, can_resend=can_resend, query=request.GET.urlencode())
    # LazyPaginator: no COUNT(*) over a 100,000-receiver message on every poll.
    paginate = {"per_page": RECEIVERS_PER_PAGE, "paginator_class": LazyPaginator}
    RequestConfig(request, paginate=paginate).configure(table)
    # A scheduled message's page follows it too, so staff watching see it start.
    in_progress = message.is_in_progress or message.is_scheduled
    # Finished, but automatic retries will still move the counts: keep a slow refresh.
    retrying = not in_progress and selectors.retry_pending(message)
    progress = selectors.sending_progress(message, counts)
    not_delivered = status.not_delivered(counts, outcomes)
    return {
        "message": message,
        "sender": composing.sender_of(message),
        "label": status_labels.message_label(message.status, progress.total, not_delivered),
        "progress": progress,
        "in_progress": in_progress,
        "retrying": retrying,
        "poll_seconds": LIVE_POLL_SECONDS if in_progress else RETRY_POLL_SECONDS if retrying else None,
        "updated_at": timezone.now(),
        "failures": selectors.failure_groups(message),
        # What was reported back (suppressed receivers were never sent, so nothing was).
        "reported": any(
            n for outcome, n in outcomes.items() if outcome != MessageReceiver.Outcome.SUPPRESSED
        ),
        "outcomes": outcomes,
        "bounces": selectors.bounce_groups(message) if outcomes else [],
        "message_errors": selectors.message_errors(message),
        "blocked": selectors.blocked_state(message),
        "paused": selectors.paused_state(message),
        "cancelled_counts": selectors.cancelled_counts(message),
        "can_control": request.user.has_perm(SEND),
        "resendable_count": (
            selectors.resendable_count(message, not_delivered, outcomes)
            if resending.resend_allowed(message)
            else 0
        ),
        "audit_events": selectors.audit_trail(message),
        # Counted only when nothing polls the page (held receivers do not keep it polling).
        "sent_in_digests": (
            0 if in_progress or retrying or message.ignore_preferences else selectors.sent_in_digests(message)
        ),
        "filter": receivers,
        "filtered_total": selectors.filtered_receiver_total(receivers),
        "table": table,
        "query": request.GET.urlencode(),
    }


def _render_status(request: HttpRequest, message: Message) -> HttpResponse:
    page = request.GET.get("page", "")
    if page.isdigit() and int(page) > MAX_PAGE:  # the OFFSET would overflow a 64-bit integer
        return HttpResponseBadRequest(_("There is no such page."))
    context = _status_context(request, message)
    polling = request.htmx and request.htmx.trigger == "receiver-results"
    code = HTMX_STOP_POLLING if polling and not context["poll_seconds"] else 200
    return _render(request, "messaging/message_status.html", context, "live", status=code)


# Messages -----------------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Where "/" and signing in lead: staff to the messages, everyone else to their own email
    settings (the only page here that is theirs)."""
    if request.user.is_authenticated and not request.user.is_staff:
        return redirect("preferences:manage")
    return redirect("messaging:message_list")


@staff_permission_required(VIEW)
@require_GET
def message_list(request: HttpRequest) -> HttpResponse:
    message_filter = selectors.message_filter(request.GET)
    table = MessageTable(message_filter.qs)
    RequestConfig(request, paginate={"per_page": MESSAGES_PER_PAGE}).configure(table)
    # The template calls it, so only full pages count the sends per week (not htmx filtering).
    context = {"filter": message_filter, "table": table, "sends_per_week": selectors.sends_per_week}
    return _render(request, "messaging/message_list.html", context, "results")


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def message_create(request: HttpRequest) -> HttpResponse:
    return _compose(request, None)


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def message_edit(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.get_message(pk)
    if not message.is_editable and request.method == "GET":
        return _read_only(request, message)
    # A save posted after the message left draft is refused by the service, and the form stays
    # on screen with what was typed (it can be copied into a new draft).
    return _compose(request, message)


@staff_permission_required(COMPOSE)
@require_POST
def message_duplicate(request: HttpRequest, pk: int) -> HttpResponse:
    copy = composing.duplicate(selectors.get_message(pk), actor=request.user)
    messages.success(request, _("A copy was made as a new draft."))
    return _redirect(request, _edit_url(copy))


@staff_permission_required(COMPOSE)
@require_http_methods(["GET", "POST"])
def message_delete(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.get_message(pk)
    if not message.is_editable:
        return _read_only(request, message)
    if request.method == "POST":
        if not composing.delete_draft(message):
            return _read_only(request, message)
        messages.success(request, _("The draft was deleted."))
        return _redirect(request, reverse("messaging:message_list"))
    return _render(request, "messaging/message_delete.html", {"message": message})


# Recipients (htmx endpoints of the compose form) -------------------------------------------------


@staff_permission_required(COMPOSE)
@require_GET
def recipient_search(request: HttpRequest) -> HttpResponse:
    found = selectors.search_recipients(request.GET.get("q", ""))
    return _render(request, "messaging/recipient_search.html", {"found": found})


@staff_permission_required(COMPOSE)
@require_GET
def group_members(request: HttpRequest, pk: int) -> HttpResponse:
    """Who a group reaches, shown on the compose page before sending to it."""
    found = selectors.group_members(pk)
    return _render(request, "messaging/group_members.html", {"found": found})


@staff_permission_required(COMPOSE)
@require_GET
def recipient_summary(request: HttpRequest) -> HttpResponse:
    selection = RecipientSelectionForm(request.GET)
    summary = selectors.recipient_summary(
        selection.ids("users"),
        selection.ids("groups"),
        _summary_context_type(request.GET.get("context_type")),
        # Only what the summary says: whether a draft is important is decided on save.
        ignore_preferences=request.GET.get("ignore_preferences") in ("on", "true", "1"),
    )
    return _render(request, "messaging/compose.html#recipient_summary", {"summary": summary})


# Preview, test and send ---------------------------------------------------------------------------


@staff_permission_required(VIEW)
@require_GET
def message_preview(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.get_message(pk)
    samples = {code: request.GET.get(f"sample_{code}", "") for code, _name in settings.LANGUAGES}
    context = {
        "message": message,
        "columns": selectors.preview_columns(message, samples, request.user),
        "summary": selectors.message_recipient_summary(message),
        "sender": composing.sender_of(message),
        "test_form": TestSendForm(actor=request.user) if request.user.has_perm(SEND) else None,
    }
    return _render(request, "messaging/message_preview.html", context, "columns")


@staff_permission_required(SEND)
@require_POST
def message_send_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Send the draft to the address typed (one, validated), rendered in the language chosen."""
    message = selectors.get_message(pk)
    form = TestSendForm(request.POST, actor=request.user)
    result = None
    if form.is_valid():
        try:
            result = composing.send_test(
                message, request.user, form.cleaned_data["to"], form.cleaned_data["language"]
            )
        except composing.TooManyTestSends as exc:
            form.add_error(None, _too_many_tests(exc))
    if not request.htmx:
        if result is None:
            for error in form.errors.values():
                messages.error(request, " ".join(error))
        elif result.delivered:
            sent_to = form.cleaned_data["to"]
            messages.success(request, _("A test was sent to %(address)s.") % {"address": sent_to})
        else:
            messages.error(request, _("The test could not be sent: %(reason)s") % {"reason": result.reason})
        return redirect("messaging:message_preview", pk=message.pk)
    context = {"message": message, "test_form": form, "result": result}
    return _render(request, "messaging/message_preview.html#test_result", context)


def _too_many_tests(exc: composing.TooManyTestSends) -> str:
    if exc.next_at is None:
        return _("Test sends are turned off on this site.")
    limit = conf.test_sends_per_hour()
    return ngettext(
        "You have sent %(limit)d test in the last hour, the most allowed; the next is possible at %(time)s.",
        "You have sent %(limit)d tests in the last hour, the most allowed; the next is possible at %(time)s.",
        limit,
    ) % {"limit": limit, "time": date_format(timezone.localtime(exc.next_at), "TIME_FORMAT")}


@staff_permission_required(SEND)
@require_http_methods(["GET", "POST"])
def message_send(request: HttpRequest, pk: int) -> HttpResponse:
    """Send a draft now or schedule it; reschedule (or send now) a scheduled one."""
    message = selectors.get_message(pk)
    if not (message.is_editable or (message.is_scheduled and message.composed_content)):
        return _read_only(request, message)
    has_content = settings.LANGUAGE_CODE in composing.languages_with_content(message)
    summary = selectors.message_recipient_summary(message)
    sender = composing.sender_of(message)
    form = SendForm(request.POST if request.method == "POST" else None, message=message)
    if request.method == "POST":
        if not summary.total or not has_content or not sender.is_allowed:
            messages.error(
                request, _("Nothing was sent: the draft needs recipients, content and an allowed sender.")
            )
            return _redirect(request, reverse("messaging:message_send", args=[message.pk]))
        if form.is_valid():
            return _send(request, message, form)
    context = {
        "message": message,
        "summary": summary,
        "has_content": has_content,
        "sender": sender,
        "form": form,
    }
    return _render(request, "messaging/message_send.html", context, status=400 if form.errors else 200)


def _send(request: HttpRequest, message: Message, form: SendForm) -> HttpResponse:
    send_at, expires_at = form.cleaned_data["send_at"], form.cleaned_data["expires_at"]
    try:
        composing.queue_send(message, actor=request.user, send_at=send_at, expires_at=expires_at)
    except ValueError:
        messages.info(request, _("This message had already been sent."))
    except composing.SenderNotAllowed:
        messages.error(
            request,
            _("Nothing was sent: its sender is no longer allowed. Edit the draft and choose another."),
        )
        return _redirect(request, reverse("messaging:message_send", args=[message.pk]))
    except composing.QueueUnavailable:
        messages.error(request, _("The task queue could not be reached; nothing was sent. Try again."))
        return _redirect(request, reverse("messaging:message_send", args=[message.pk]))
    else:
        if send_at is not None:
            when = date_format(timezone.localtime(send_at), "SHORT_DATETIME_FORMAT")
            messages.success(request, _("Scheduled for %(when)s.") % {"when": when})
    return _redirect(request, _status_url(message))


@staff_permission_required(SEND)
@require_POST
def message_unschedule(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.get_message(pk)
    if composing.unschedule(message, actor=request.user):
        messages.success(request, _("The message is a draft again; it will not be sent."))
        return _redirect(request, _edit_url(message))
    messages.info(request, _("This message has already started; it can no longer be taken back to draft."))
    return _redirect(request, _status_url(message))


@staff_permission_required(SEND)
@require_POST
def message_pause(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, "pause")


@staff_permission_required(SEND)
@require_POST
def message_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, "resume")


@staff_permission_required(SEND)
@require_POST
def message_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, "cancel")


def _control(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Pause, resume or cancel a send (the status page's buttons, with confirmation)."""
    message = selectors.get_message_for_status(pk)
    try:
        controlling.ACTIONS[action](message, actor=request.user)
    except controlling.ControlRefused as refused:
        messages.error(request, refused.text)
    else:
        messages.success(request, CONTROL_DONE[action])
    if request.htmx:
        return _render_status(request, selectors.get_message_for_status(pk))
    return redirect(_status_url(message))


CONTROL_DONE = {
    "pause": gettext_lazy("Paused: no further receivers are handed to the mail server until you resume."),
    "resume": gettext_lazy("Resumed: sending continues with the receivers not sent yet."),
    "cancel": gettext_lazy("Cancelled: receivers not yet handed to the mail server will not be sent."),
}


# Status and resending ---------------------------------------------------------------------------


@staff_permission_required(VIEW)
@require_GET
def message_status(request: HttpRequest, pk: int) -> HttpResponse:
    return _render_status(request, selectors.get_message_for_status(pk))


@staff_permission_required(RESEND)
@require_http_methods(["GET", "POST"])
def message_resend_failed(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what a resend would do (how many can succeed, how many failed for good); POST: do it,
    by default only for those that can succeed."""
    message = selectors.get_message_for_status(pk)
    plan = resending.resend_plan(message)
    if request.method == "GET":
        context = {"message": message, "plan": plan, "allowed": resending.resend_allowed(message)}
        return _render(request, "messaging/message_resend.html", context)
    include_permanent = request.POST.get("include_permanent") == "on"
    moved = resending.resend_failed(message, actor=request.user, include_permanent=include_permanent)
    for level, text in _resend_outcome(message, plan, moved, include_permanent):
        messages.add_message(request, level, text)
    return _redirect(request, _status_url(message))


def _resend_outcome(message: Message, plan: resending.ResendPlan, moved: int, include_permanent: bool):
    if moved:
        text = ngettext(
            "%(count)d receiver was queued again.", "%(count)d receivers were queued again.", moved
        )
        yield messages.SUCCESS, text % {"count": moved}
    if plan.permanent and not include_permanent:
        text = ngettext(
            "%(count)d receiver that failed permanently was left alone.",
            "%(count)d receivers that failed permanently were left alone.",
            plan.permanent,
        )
        yield messages.INFO, text % {"count": plan.permanent}
    if plan.suppressed:
        text = ngettext(
            "%(count)d receiver was not resent: its address is suppressed.",
            "%(count)d receivers were not resent: their addresses are suppressed.",
            plan.suppressed,
        )
        yield messages.WARNING, text % {"count": plan.suppressed}
    elif not moved and not resending.resend_allowed(message):
        yield messages.INFO, _("This message was cancelled or has expired; duplicate it to send it again.")
    elif not moved and not plan.permanent:
        yield messages.INFO, _("There were no failed receivers to resend.")


@staff_permission_required(VIEW)
@require_GET
def receiver_detail(request: HttpRequest, pk: int) -> HttpResponse:
    receiver = selectors.get_receiver(pk)
    can_resend = request.user.has_perm(RESEND) and receiver.is_resendable
    context = {
        "receiver": receiver,
        "label": status_labels.receiver_label(receiver),
        "message": receiver.message,
        "can_resend": can_resend,
        "resend_refusal": resending.resend_refusal(receiver) if can_resend else "",
        "events": selectors.delivery_events(receiver),
        "suppression": suppressions.suppression_of(receiver.send_to),
        "digest_items": (
            selectors.digest_items(receiver)
            if receiver.message.context_type == Message.ContextType.DIGEST
            else []
        ),
    }
    return _render(request, "messaging/receiver_detail.html", context)


@staff_permission_required(RESEND)
@require_POST
def receiver_resend(request: HttpRequest, pk: int) -> HttpResponse:
    receiver = selectors.get_receiver(pk)
    refusal = resending.resend_refusal(receiver)
    if refusal or not resending.resend_receiver(receiver, actor=request.user):
        messages.info(request, refusal or _("Only failed or bounced receivers can be resent."))
    if not request.htmx:
        return redirect(_status_url(receiver.message))
    # The whole live region: the row, the counts and the polling that follows the resend.
    return _render_status(request, receiver.message)

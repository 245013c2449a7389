"""Watching and answering for a send (SPEC §3): the message list, the live status page with its
receiver table, pause/resume/cancel, and resending failed receivers."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_tables2 import RequestConfig

from messaging.compose import composing
from messaging.engine import controlling, resending, status
from messaging.feedback import suppressions
from messaging.models import Message, MessageReceiver
from messaging.staff_pages import (
    RESEND,
    SEND,
    VIEW,
    redirect_to,
    render_page,
    staff_permission_required,
    status_url,
)
from messaging.tracking import paging, selectors, status_labels
from messaging.tracking.tables import MessageTable, ReceiverTable

MESSAGES_PER_PAGE = 25
RECEIVERS_PER_PAGE = 25

# The paginator does not count rows, so page numbers are bounded here instead.
MAX_PAGE = 10**9

# htmx stops polling when a response has this status code.
HTMX_STOP_POLLING = 286

# The page's version (selectors.status_version), sent back by its polls; and when a poll that
# changed nothing checked (a 204 has no body to say it in).
VERSION_HEADER = "X-Status-Version"
CHECKED_HEADER = "X-Status-Checked"

# The status page refreshes itself this often while sending, and while retries are pending.
LIVE_POLL_SECONDS = 2
RETRY_POLL_SECONDS = 15
# The message list, while a message on it is live (its counts are read afresh on every refresh),
# and while only retries are pending.
LIST_POLL_SECONDS = {selectors.LIVE: 5, selectors.RETRYING: RETRY_POLL_SECONDS}

CONTROL_DONE = {
    "pause": gettext_lazy("Paused: no further receivers are handed to the mail server until you resume."),
    "resume": gettext_lazy("Resumed: sending continues with the receivers not sent yet."),
    "cancel": gettext_lazy("Cancelled: receivers not yet handed to the mail server will not be sent."),
}


def _status_context(request: HttpRequest, message: Message, change: str | None, version: str) -> dict:
    counts = status.published_counts(message)
    outcomes = selectors.outcome_counts(message)
    receivers = selectors.receiver_filter(message, request.GET)
    can_resend = request.user.has_perm(RESEND) and resending.resend_allowed(message)
    table = ReceiverTable(receivers.qs, can_resend=can_resend, query=request.GET.urlencode())
    RequestConfig(request, paginate=False).configure(table)  # the order the request asks for
    # No COUNT(*) over a big message on every poll, and no OFFSET over its joined rows.
    paging.paginate(table, request.GET, RECEIVERS_PER_PAGE, rows=receivers.queryset)
    live = change == selectors.LIVE
    # Finished, but automatic retries will still move the counts: keep a slow refresh.
    retrying = change == selectors.RETRYING
    progress = selectors.sending_progress(message, counts)
    not_delivered = status.not_delivered(counts, outcomes)
    return {
        "message": message,
        "sender": composing.sender_of(message),
        "label": status_labels.message_label(message.status, progress.total, not_delivered),
        "progress": progress,
        "in_progress": live,
        "retrying": retrying,
        "poll_seconds": LIVE_POLL_SECONDS if live else RETRY_POLL_SECONDS if retrying else None,
        "version": version,
        "updated_at": timezone.now(),
        "failures": selectors.failure_groups(message, counts),
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
            0 if live or retrying or message.ignore_preferences else selectors.sent_in_digests(message)
        ),
        "filter": receivers,
        "filtered_total": selectors.filtered_receiver_total(receivers),
        "matches_counted": selectors.MATCHES_COUNTED,
        "table": table,
        "query": request.GET.urlencode(),
    }


def _render_status(request: HttpRequest, message: Message) -> HttpResponse:
    page = request.GET.get("page", "")
    if page.isdigit() and int(page) > MAX_PAGE:  # the OFFSET would overflow a 64-bit integer
        return HttpResponseBadRequest(_("There is no such page."))
    change = selectors.pending_change(message)
    version = selectors.status_version(message, request.GET, change)
    polling = request.htmx and request.htmx.trigger == "receiver-results"
    if polling and request.headers.get(VERSION_HEADER) == version:
        return _nothing_changed()
    context = _status_context(request, message, change, version)
    code = HTMX_STOP_POLLING if polling and not context["poll_seconds"] else 200
    return render_page(request, "messaging/tracking/message_status.html", context, "live", status=code)


def _nothing_changed() -> HttpResponse:
    """A poll that shows what the page shows already: htmx leaves the page as it is (204), and
    app.js moves its "Updated" time to this check's, in the page's time zone."""
    now = timezone.localtime()
    return HttpResponse(
        status=204, headers={CHECKED_HEADER: f"{now.isoformat()} {date_format(now, 'H:i:s')}"}
    )


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
    # Read once here; the table then renders the same rows from the queryset's cache.
    shown = [row.record for row in table.page.object_list]
    change = selectors.pending_change_of(shown)
    context = {
        "filter": message_filter,
        "table": table,
        # The template calls it, so only full pages count the sends per week (not htmx requests).
        "sends_per_week": selectors.sends_per_week,
        "poll_seconds": LIST_POLL_SECONDS.get(change),
        "query": request.GET.urlencode(),
    }
    return render_page(request, "messaging/tracking/message_list.html", context, "results")


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
        messages.error(request, status_labels.refusal_text(refused))
    else:
        messages.success(request, CONTROL_DONE[action])
    if request.htmx:
        return _render_status(request, selectors.get_message_for_status(pk))
    return redirect(status_url(message))


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
        return render_page(request, "messaging/tracking/message_resend.html", context)
    include_permanent = request.POST.get("include_permanent") == "on"
    moved = resending.resend_failed(message, actor=request.user, include_permanent=include_permanent)
    for level, text in _resend_outcome(message, plan, moved, include_permanent):
        messages.add_message(request, level, text)
    return redirect_to(request, status_url(message))


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
        "uncertain_note": status_labels.uncertain_note(receiver),
        "resumes_at": status_labels.resumes_at(receiver),
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
    return render_page(request, "messaging/tracking/receiver_detail.html", context)


@staff_permission_required(RESEND)
@require_POST
def receiver_resend(request: HttpRequest, pk: int) -> HttpResponse:
    receiver = selectors.get_receiver(pk)
    refusal = resending.resend_refusal(receiver)
    if refusal or not resending.resend_receiver(receiver, actor=request.user):
        messages.info(request, refusal or _("Only failed or bounced receivers can be resent."))
    if not request.htmx:
        return redirect(status_url(receiver.message))
    # The whole live region: the row, the counts and the polling that follows the resend.
    return _render_status(request, receiver.message)

"""Composing a message (SPEC §3): drafts, recipients, preview, test sends and sending."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

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
from messaging.engine import rendering
from messaging.models import Message
from messaging.preferences import context_types
from messaging.staff_pages import (
    COMPOSE,
    SEND,
    VIEW,
    edit_url,
    redirect_to,
    render_page,
    staff_permission_required,
    status_url,
)
from messaging.tracking import selectors


def _read_only(request: HttpRequest, message: Message) -> HttpResponse:
    messages.info(request, _("This message has been sent and can no longer be changed."))
    return redirect_to(request, status_url(message))


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
            return render_page(
                request,
                "messaging/compose/compose.html",
                _compose_context(request, form, message, attachments_form),
                "compose_form",
                # htmx swaps only 2xx answers: the form with its explanation must replace the old one.
                200 if request.htmx else 409,
            )
        except message_attachments.LimitReached as refused:  # another save came first
            attachments_form.add_error("attachments", refused)
            return render_page(
                request,
                "messaging/compose/compose.html",
                _compose_context(request, form, message, attachments_form),
                "compose_form",
            )
        messages.success(request, _("Draft saved."))
        if request.POST.get("next") == "preview":
            return redirect_to(request, reverse("messaging:message_preview", args=[saved.pk]))
        return redirect_to(request, edit_url(saved))
    return render_page(
        request,
        "messaging/compose/compose.html",
        _compose_context(request, form, message, attachments_form),
        "compose_form",
    )


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
    return redirect_to(request, edit_url(copy))


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
        return redirect_to(request, reverse("messaging:message_list"))
    return render_page(request, "messaging/compose/message_delete.html", {"message": message})


@staff_permission_required(COMPOSE)
@require_GET
def recipient_search(request: HttpRequest) -> HttpResponse:
    found = selectors.search_recipients(request.GET.get("q", ""))
    return render_page(request, "messaging/compose/recipient_search.html", {"found": found})


@staff_permission_required(COMPOSE)
@require_GET
def group_members(request: HttpRequest, pk: int) -> HttpResponse:
    """Who a group reaches, shown on the compose page before sending to it."""
    found = selectors.group_members(pk)
    return render_page(request, "messaging/compose/group_members.html", {"found": found})


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
    return render_page(request, "messaging/compose/compose.html#recipient_summary", {"summary": summary})


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
    return render_page(request, "messaging/compose/message_preview.html", context, "columns")


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
    return render_page(request, "messaging/compose/message_preview.html#test_result", context)


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
            return redirect_to(request, reverse("messaging:message_send", args=[message.pk]))
        if form.is_valid():
            return _send(request, message, form)
    context = {
        "message": message,
        "summary": summary,
        "has_content": has_content,
        "sender": sender,
        "form": form,
    }
    return render_page(
        request, "messaging/compose/message_send.html", context, status=400 if form.errors else 200
    )


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
        return redirect_to(request, reverse("messaging:message_send", args=[message.pk]))
    except composing.QueueUnavailable:
        messages.error(request, _("The task queue could not be reached; nothing was sent. Try again."))
        return redirect_to(request, reverse("messaging:message_send", args=[message.pk]))
    else:
        if send_at is not None:
            when = date_format(timezone.localtime(send_at), "SHORT_DATETIME_FORMAT")
            messages.success(request, _("Scheduled for %(when)s.") % {"when": when})
    return redirect_to(request, status_url(message))


@staff_permission_required(SEND)
@require_POST
def message_unschedule(request: HttpRequest, pk: int) -> HttpResponse:
    message = selectors.get_message(pk)
    if composing.unschedule(message, actor=request.user):
        messages.success(request, _("The message is a draft again; it will not be sent."))
        return redirect_to(request, edit_url(message))
    messages.info(request, _("This message has already started; it can no longer be taken back to draft."))
    return redirect_to(request, status_url(message))

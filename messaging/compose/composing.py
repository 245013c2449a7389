"""Staff-composed messages: drafts, duplicates, sending, test sends and previews."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging import conf
from messaging.compose import attachments
from messaging.engine import channels, controlling, queue, recipients, sending, transitions
from messaging.engine.channels import ChannelUnavailable, DeliveryResult
from messaging.engine.outgoing import deliver_now
from messaging.engine.rendering import ContentRenderer, RenderedContent
from messaging.engine.status import exception_entry
from messaging.models import AuditEvent, Message, MessageReceiver
from messaging.operations.audit import record
from messaging.subject_generator import ComposedSubjectGenerator

COMPOSED_TEMPLATE = "messaging/email/composed.html"


def languages_with_content(message: Message) -> list[str]:
    return [
        code
        for code in recipients.supported_languages()
        if message.composed_content.get(code, {}).get("body")
    ]


def content_language(message: Message, language: str) -> str:
    """The language whose content a receiver in `language` gets (itself, or the default)."""
    return language if language in languages_with_content(message) else settings.LANGUAGE_CODE


def renderer_for(message: Message) -> ContentRenderer:
    default = settings.LANGUAGE_CODE
    subjects = {lang: c.get("subject", "") for lang, c in message.composed_content.items() if c.get("body")}
    bodies = {lang: c["body"] for lang, c in message.composed_content.items() if c.get("body")}
    return ContentRenderer(
        ComposedSubjectGenerator(subjects=subjects, default_language=default),
        COMPOSED_TEMPLATE,
        {"bodies": bodies, "default_language": default},
    )


@dataclass(frozen=True)
class Sender:
    """Who a message's recipients see it from, and where their replies go."""

    from_email: str  # the chosen sender, else DEFAULT_FROM_EMAIL
    reply_to: str  # "": replies go to the sender
    is_default: bool
    # False when MESSAGING_ALLOWED_SENDERS no longer lists the sender chosen for this message.
    is_allowed: bool


def sender_of(message: Message) -> Sender:
    chosen = message.from_email
    return Sender(
        from_email=message.from_address,
        reply_to=message.reply_to,
        is_default=not chosen,
        is_allowed=not chosen or chosen in conf.allowed_senders(),
    )


def sender_details(message: Message) -> dict:
    """From and Reply-To as the audit trail records them."""
    return {"from": message.from_address, "reply_to": message.reply_to}


class DraftChanged(ValueError):
    """The message left `draft` (or was deleted) while it was being edited; nothing was saved."""


EDITABLE_FIELDS = [
    "context_type",
    "message_type",
    "composed_content",
    "virtual_message_receivers",
    "from_email",
    "reply_to",
    "ignore_preferences",
]

IGNORE_PREFERENCES = "messaging.ignore_preferences"


class ImportantNotAllowed(PermissionError):
    """Someone without the ignore_preferences permission tried to mark a draft important (or
    to take the mark away); nothing was saved."""


def may_mark_important(actor) -> bool:
    return actor is not None and actor.has_perm(IGNORE_PREFERENCES)


def _importance_action(was: bool, now: bool) -> str | None:
    if was == now:
        return None
    return AuditEvent.Action.MARKED_IMPORTANT if now else AuditEvent.Action.UNMARKED_IMPORTANT


def save_draft(message: Message, actor=None) -> Message:
    """Create a draft, or save an edit only while the message is still a draft: a form posted
    from a stale page after the message was sent must not turn it back into a draft."""
    if not message.is_editable:
        raise DraftChanged(f"Message #{message.pk} is {message.status}; only drafts can be edited.")
    creating = message.pk is None
    if creating:
        message.created_by = actor
    message.full_clean()
    with transaction.atomic():
        was_important = (
            False
            if creating
            else Message.objects.filter(pk=message.pk).values_list("ignore_preferences", flat=True).first()
        )
        importance = _importance_action(bool(was_important), message.ignore_preferences)
        # Code (actor None) may send important messages; a person needs the permission.
        if importance and actor is not None and not may_mark_important(actor):
            raise ImportantNotAllowed(f"{actor} may not change whether message #{message.pk} is important.")
        if creating:
            message.save()
        elif (
            not Message.objects.drafts()
            .filter(pk=message.pk)
            .update(**{name: getattr(message, name) for name in EDITABLE_FIELDS})
        ):
            raise DraftChanged(f"Message #{message.pk} is no longer a draft; the edit was not saved.")
        record(message, AuditEvent.Action.CREATED if creating else AuditEvent.Action.EDITED, actor)
        if importance:
            record(message, importance, actor)
    return message


def delete_draft(message: Message) -> bool:
    """Delete a draft; False if it left `draft` meanwhile (it is then kept)."""
    _total, deleted = Message.objects.drafts().filter(pk=message.pk).delete()
    return bool(deleted.get(Message._meta.label))


def duplicate(message: Message, actor=None) -> Message:
    """A new draft with the message's content, recipients and sender. It stays important only
    when the one who copies may mark messages important (else it follows preferences)."""
    important = message.ignore_preferences and (actor is None or may_mark_important(actor))
    copy = Message(
        ignore_preferences=important,
        created_by=actor,
        context_type=message.context_type,
        message_type=list(message.message_type),
        composed_content=dict(message.composed_content),
        from_email=message.from_email,
        reply_to=message.reply_to,
        virtual_message_receivers={
            "chosen_user_ids": recipients.chosen_user_ids(message),
            "group_ids": recipients.chosen_group_ids(message),
        },
    )
    with transaction.atomic():
        copy.save()
        attachments.copy_all(message, copy)
        record(copy, AuditEvent.Action.DUPLICATED, actor, source=message.pk)
        if important:
            record(copy, AuditEvent.Action.MARKED_IMPORTANT, actor, source=message.pk)
    return copy


class QueueUnavailable(Exception):
    """The task queue (Redis or the SqliteHuey file) could not take the send; nothing was sent."""


class SenderNotAllowed(Exception):
    """The message's From is no longer in MESSAGING_ALLOWED_SENDERS; nothing was sent."""


def queue_send(message: Message, actor=None, *, send_at=None, expires_at=None) -> int:
    """Send a draft now, or schedule it (or a scheduled one again) for `send_at`.

    Now: freeze the recipients to user ids, move to queued and hand the message to a worker
    after commit. Raises ValueError if it is neither a draft nor scheduled, QueueUnavailable
    (and goes back to where it was) if the task queue cannot take it. Returns the number of
    recipients as of now. Raises SenderNotAllowed if its chosen sender is no longer allowed."""
    if not sender_of(message).is_allowed:
        raise SenderNotAllowed(message.from_email)
    sending.validate_schedule(send_at, expires_at)
    user_ids = recipients.resolved_user_ids(message)
    if send_at is not None and send_at > timezone.now():
        return _schedule(message, actor, send_at, expires_at, len(user_ids))
    if message.is_scheduled:
        # "Send now" on a scheduled message: its time is now.
        if not transitions.schedule(message, timezone.now(), expires_at):
            raise ValueError(f"Message #{message.pk} is {message.status}; it has already started.")
        return _start_now(message, actor, user_ids, expected=[Message.Status.SCHEDULED])
    Message.objects.drafts().filter(pk=message.pk).update(expires_at=expires_at)
    message.expires_at = expires_at
    return _start_now(message, actor, user_ids, expected=[Message.Status.DRAFT])


def _start_now(message: Message, actor, user_ids: list[int], expected: list[str]) -> int:
    if not transitions.queue(message, user_ids, expected=expected):
        raise ValueError(f"Message #{message.pk} is {message.status}; it has already been sent.")

    def enqueue() -> None:
        queue.send_composed_message(message.pk)
        record(message, AuditEvent.Action.SENT, actor, receivers=len(user_ids), **sender_details(message))

    try:
        transaction.on_commit(enqueue)  # runs now unless the caller holds a transaction
    except Exception as exc:  # the queue's own errors (redis, sqlite) have no common base class
        transitions.unqueue(message)
        raise QueueUnavailable(str(exc)) from exc
    return len(user_ids)


def _schedule(message: Message, actor, send_at, expires_at, recipients: int) -> int:
    if not transitions.schedule(message, send_at, expires_at):
        raise ValueError(f"Message #{message.pk} is {message.status}; it can no longer be scheduled.")
    record(
        message,
        AuditEvent.Action.SCHEDULED,
        actor,
        send_at=send_at.isoformat(),
        expires_at=expires_at.isoformat() if expires_at else None,
        receivers=recipients,
        **sender_details(message),
    )
    sending.schedule_start(message)
    return recipients


def unschedule(message: Message, actor=None) -> bool:
    """scheduled → draft (staff-composed messages only); False if it started meanwhile."""
    if not transitions.unschedule(message):
        return False
    record(message, AuditEvent.Action.UNSCHEDULED, actor)
    return True


def send_composed(message: Message) -> None:
    """The worker's side of queue_send: prepare and deliver a queued message, or carry on one
    whose preparation died part-way (the sweeper queues it again). Anything else (already
    started by another worker, taken back) is left alone; one past its expiry is expired, not
    sent."""
    if message.status in Message.STREAMING and message.status_data.get("still_preparing"):
        sending.resume_preparation(message, **prepare_arguments(message))
        return
    if message.status != Message.Status.QUEUED:
        return
    if message.is_expired:
        controlling.expire(message.pk)
        return
    try:
        # Streaming: its first receivers go out while the rest are being prepared.
        sending.prepare_and_send(message, stream=True, **prepare_arguments(message))
    except ValueError as exc:  # invalid recipients: recorded on the message
        transitions.fail(message, exception_entry(exc))


def prepare_arguments(message: Message) -> dict:
    renderer = renderer_for(message)
    return {
        "subject_generator": renderer.subject_generator,
        "template_name": renderer.template_name,
        "template_context": renderer.template_context,
    }


@dataclass(frozen=True)
class Preview:
    language: str
    content_language: str
    sample_user: object
    address: str
    content: RenderedContent | None
    error: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.language != self.content_language


def preview(message: Message, language: str, sample_user) -> Preview:
    renderer = renderer_for(message)
    content, error = None, ""
    try:
        content = renderer.render(sample_user, language)
    except Exception as exc:  # shown to staff on the preview instead of a crash
        error = f"{type(exc).__name__}: {exc}"
    return Preview(
        language=language,
        content_language=content_language(message, language),
        sample_user=sample_user,
        address=recipients.notification_address(sample_user),
        content=content,
        error=error,
    )


TEST_SEND_WINDOW = timedelta(hours=1)


class TooManyTestSends(Exception):
    """The staff member made MESSAGING_TEST_SENDS_PER_HOUR test sends within the last hour;
    `next_at` is when the next one is possible (None: test sends are turned off)."""

    def __init__(self, next_at: datetime | None):
        self.next_at = next_at
        super().__init__(f"Too many test sends; the next is possible at {next_at}.")


def next_test_send_at(actor) -> datetime | None:
    """When `actor` may make the next test send, if not now; raises TooManyTestSends when test
    sends are turned off (a limit below 1)."""
    limit = conf.test_sends_per_hour()
    if limit is None:
        return None
    if limit < 1:
        raise TooManyTestSends(None)
    # Counted from the audit trail rather than a cache: every process and host sees the same
    # rows without a shared cache being set up, and each test send is recorded there anyway.
    # One query over the actor's index, at most `limit` rows.
    recent = list(
        AuditEvent.objects.filter(
            actor=actor,
            action=AuditEvent.Action.TEST_SENT,
            created_datetime__gt=timezone.now() - TEST_SEND_WINDOW,
        )
        .order_by("-created_datetime")
        .values_list("created_datetime", flat=True)[:limit]
    )
    if len(recent) < limit:
        return None
    # Once the limit-th newest leaves the window, fewer than `limit` remain in it.
    return recent[limit - 1] + TEST_SEND_WINDOW


def send_test(message: Message, actor, address: str = "", language: str = "") -> DeliveryResult:
    """Deliver the draft to `address` in `language` (by default the staff member's own address
    and language); the draft stays untouched. Raises TooManyTestSends, sending nothing,
    when the staff member has used up their test sends for the hour. (Two tests sent at the
    very same moment may both pass the check: the limit is against careless repetition, not
    an attack.)"""
    next_at = next_test_send_at(actor)
    if next_at is not None:
        raise TooManyTestSends(next_at)
    language = recipients.resolve_language(language) if language else recipients.preferred_language(actor)
    receiver = MessageReceiver(
        message=message,
        user=actor,
        language=language,
        send_to=address or recipients.notification_address(actor),
    )
    try:
        content = renderer_for(message).render(actor, language)
        receiver.subject = content.subject
        receiver.message_content_html = content.html
        receiver.message_content_plain = content.plain
        result = deliver_now(channels.get_channel("email"), receiver)
    except ChannelUnavailable as exc:
        result = DeliveryResult(delivered=False, reason=str(exc))
    except ValueError as exc:
        result = DeliveryResult(delivered=False, permanent=True, reason=str(exc))
    record(
        message,
        AuditEvent.Action.TEST_SENT,
        actor,
        to=receiver.send_to,
        language=language,
        delivered=result.delivered,
        reason=result.reason,
        **sender_details(message),
    )
    return result

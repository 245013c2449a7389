"""What the staff UI calls a status: the contract's statuses stay in the data and the API, but
people read "Sent, 10 not delivered" or "Failed permanently", not "error".

Every badge in the UI comes from here, so a label and its colour mean the same on every page.
Severity names the colour (static/messaging/app.css `.severity-*`): ok, partial, progress,
waiting, temporary, permanent, neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from messaging.engine import status as engine_status
from messaging.engine.controlling import ControlRefused
from messaging.models import Message, MessageReceiver
from messaging.tracking import selectors

ReceiverStatus = MessageReceiver.Status


@dataclass(frozen=True)
class Label:
    key: str  # stable: data-label in the markup, what tests and scripts look for
    text: str
    severity: str
    status: str = ""  # the contract's status it stands for, kept in the markup as data-status

    def badge(self) -> str:
        return format_html(
            '<span class="badge status-badge severity-{}" data-status="{}" data-label="{}">{}</span>',
            self.severity,
            self.status,
            self.key,
            self.text,
        )


# Message -------------------------------------------------------------------------------------------

_MESSAGE_LABELS = {
    Message.Status.DRAFT: ("draft", _("Draft"), "neutral"),
    Message.Status.SCHEDULED: ("scheduled", _("Scheduled"), "waiting"),
    Message.Status.QUEUED: ("sending", _("Sending"), "progress"),
    Message.Status.PREPARING: ("sending", _("Sending"), "progress"),
    Message.Status.SENDING: ("sending", _("Sending"), "progress"),
    Message.Status.BLOCKED: ("blocked", _("Delivery blocked"), "permanent"),
    Message.Status.PAUSED: ("paused", _("Paused"), "temporary"),
    Message.Status.CANCELLED: ("cancelled", _("Cancelled"), "neutral"),
    Message.Status.EXPIRED: ("expired", _("Expired"), "neutral"),
}


def message_label(status: str, total: int, not_delivered: int) -> Label:
    """A finished send says how it went: "Sent", "Sent, 10 not delivered" or "Failed".

    `not_delivered`: receivers that failed (whether or not a retry is pending) plus emails that
    bounced, were rejected or marked as spam after sending."""
    return replace(_message_label(status, total, not_delivered), status=status)


def _message_label(status: str, total: int, not_delivered: int) -> Label:
    if status in (Message.Status.SENT, Message.Status.ERROR):
        if not not_delivered:
            return Label("sent", _("Sent"), "ok")
        if not_delivered >= total:
            return Label("failed", _("Failed"), "permanent")
        text = ngettext("Sent, %(count)d not delivered", "Sent, %(count)d not delivered", not_delivered)
        return Label("sent_partly", text % {"count": not_delivered}, "partial")
    key, text, severity = _MESSAGE_LABELS.get(status, (status, status, "neutral"))
    return Label(key, text, severity)


def current_message_label(message: Message) -> Label:
    """The badge `message`'s status page shows now (its published counts and the reports back)."""
    counts = engine_status.published_counts(message)
    not_delivered = engine_status.not_delivered(counts, selectors.outcome_counts(message))
    return message_label(message.status, sum(counts.values()), not_delivered)


def refusal_text(refused: ControlRefused) -> str:
    """A refused pause, resume or cancel in the words of the badge beside it: "this one is
    “Sent, 12 not delivered”", not the data's "Error"."""
    label = current_message_label(refused.message).text
    return refused.describe(_("“%(label)s”") % {"label": label})


# Receiver -------------------------------------------------------------------------------------------

RETRYING = Label("retrying", _("Failed, retrying"), "temporary")
# Preferences: a skipped receiver is final and no failure (the user turned the type off); a held
# one waits for the user's digest, then goes out in it.
SKIPPED = Label("skipped", _("Skipped by preference"), "neutral")
HELD = Label("held", _("Held for digest"), "waiting")
IN_DIGEST = Label("in_digest", _("In a digest being sent"), "progress")
SENT_IN_DIGEST = Label("sent_in_digest", _("Sent in a digest"), "ok")
RETRIES_USED_UP = Label("retries_used_up", _("Failed, retries used up"), "temporary")
FAILED_PERMANENTLY = Label("failed_permanently", _("Failed permanently"), "permanent")


def receiver_label(receiver: MessageReceiver) -> Label:
    """Temporary failures (a 451, a timeout: retried, a resend can work) look different from
    permanent ones (550 no such user, no address: they fail again until the address changes)."""
    return replace(_receiver_label(receiver), status=receiver.status)


def _receiver_label(receiver: MessageReceiver) -> Label:
    status = receiver.status
    if status == ReceiverStatus.SENT:
        return SENT_IN_DIGEST if receiver.digest_id else Label("sent", _("Sent"), "ok")
    if status == ReceiverStatus.SKIPPED:
        return SKIPPED
    if status == ReceiverStatus.HELD:
        return IN_DIGEST if receiver.digest_id else HELD
    if status == ReceiverStatus.NOT_SENT:
        if receiver.sending_failed_count:
            return Label("retry_queued", _("Queued for another try"), "progress")
        return Label("not_sent", _("Not sent yet"), "neutral")
    if status == ReceiverStatus.CANCELLED:
        if receiver.cancel_reason == MessageReceiver.CancelReason.EXPIRED:
            return Label("expired", _("Expired, not sent"), "neutral")
        return Label("cancelled", _("Cancelled, not sent"), "neutral")
    if receiver.permanent_failure:
        return FAILED_PERMANENTLY
    if status == ReceiverStatus.FAILED:
        return RETRYING
    return RETRIES_USED_UP


def receiver_badge(receiver: MessageReceiver) -> str:
    return receiver_label(receiver).badge()


def uncertain_note(receiver: MessageReceiver) -> str:
    """What staff should know of a receiver flagged "delivery_uncertain": an attempt was handed
    to the server and no answer came back (a worker, connection, database or provider failed),
    so the person may have that email, whatever the status says."""
    flagged = getattr(receiver, "uncertain_flag", None)  # MessageReceiverQuerySet.with_uncertain_flag
    if not (flagged if flagged is not None else "delivery_uncertain" in receiver.status_data):
        return ""
    if receiver.status == MessageReceiver.Status.CANCELLED:
        return _("may have arrived before it was stopped")
    if receiver.status == MessageReceiver.Status.SENT:
        return _("an earlier attempt may have arrived too")
    return _("may have arrived; any new attempt has the same Message-ID")


def resumes_at(receiver: MessageReceiver):
    """When a receiver that is set aside (its domain's sending limit is used up, or it waits
    after an uncertain attempt) may be sent again; None if it is not waiting for a time."""
    if (
        receiver.status == MessageReceiver.Status.NOT_SENT
        and not receiver.claimed_by
        and receiver.lease_expires_datetime is not None
        and receiver.lease_expires_datetime > timezone.now()
    ):
        return receiver.lease_expires_datetime
    return None

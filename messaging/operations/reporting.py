"""Telling the sender: when a send finishes with failures, is blocked, pauses itself or
expires, the staff member who sent it gets an email through this same engine, in their own
language, with the counts, the top failure reasons and a link to the status page.

`on_status_changed` listens to every message transition (messaging.signals) and queues
`queue.report_to_sender` after commit; the task decides again from the committed state, and
`transitions.mark_reported` makes sure each event is reported once per message.
"""

from __future__ import annotations

import logging

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from messaging import conf
from messaging.engine import queue, recipients, transitions
from messaging.engine.rendering import PLACEHOLDER_RE
from messaging.engine.status import cancelled_counts, published_counts
from messaging.models import AuditEvent, Message, MessageReceiver
from messaging.operations.audit import record
from messaging.subject_generator import SubjectTextGenerator

logger = logging.getLogger(__name__)

FINISHED_WITH_FAILURES = "finished_with_failures"
BLOCKED = "blocked"
AUTO_PAUSED = "auto_paused"
EXPIRED = "expired"

SUBJECTS = {
    FINISHED_WITH_FAILURES: _("Sent with failures: %(subject)s"),
    BLOCKED: _("Delivery blocked: %(subject)s"),
    AUTO_PAUSED: _("Sending paused automatically: %(subject)s"),
    EXPIRED: _("Expired before everyone got it: %(subject)s"),
}
TEMPLATE = "messaging/email/sending_report.html"
TOP_REASONS = 5


def event_for(old: str, new: str, status_data: dict) -> str | None:
    """The reportable event of a status change, if any."""
    Status = Message.Status
    if new == Status.ERROR and old in (Status.SENDING, Status.BLOCKED, Status.PAUSED):
        return FINISHED_WITH_FAILURES
    if (
        new == Status.BLOCKED
        and old == Status.SENDING
        and status_data.get("blocked", {}).get("attempts") == 1
    ):
        return BLOCKED
    if new == Status.PAUSED and status_data.get("paused", {}).get("automatic"):
        return AUTO_PAUSED
    if new == Status.EXPIRED:
        return EXPIRED
    return None


def on_status_changed(sender, message_id: int, old: str, new: str, status_data: dict, **kwargs) -> None:
    event = event_for(old, new, status_data)
    if event is None or not conf.notify_sender():
        return
    # robust: a report is never worth failing the transition that caused it.
    queue.after_commit(queue.report_to_sender, message_id, event)


class ReportSubject(SubjectTextGenerator):
    def __init__(self, event: str, subject: str, **kwargs):
        super().__init__(**kwargs)
        self.event, self.subject = event, subject

    def get_subject_text(self) -> str:
        return str(SUBJECTS[self.event] % {"subject": self.subject})[:255]


def _subject_of(message: Message) -> str:
    """The message's subject with its placeholders shown as names: the report is personalised
    for the sender, who should see "{{ recipient_name }}" as [recipient_name], not their name."""
    return PLACEHOLDER_RE.sub(lambda match: f"[{match.group(1)}]", str(message.display_subject))


def _still_true(message: Message, event: str) -> bool:
    """The committed state still shows the event (a retry may have started meanwhile)."""
    if event == FINISHED_WITH_FAILURES:
        waiting = MessageReceiver.objects.filter(message=message).awaiting_retry().exists()
        return message.status == Message.Status.ERROR and not waiting
    return True


def report_context(message: Message, event: str) -> dict:
    from messaging.tracking import selectors

    path = reverse("messaging:message_status", args=[message.pk])
    return {
        "event": event,
        "message_number": message.pk,
        "message_subject": _subject_of(message),
        "counts": published_counts(message),
        "cancelled": cancelled_counts(message.pk),
        "failures": selectors.failure_groups(message)[:TOP_REASONS],
        "blocked_reason": message.status_data.get("blocked", {}).get("reason", ""),
        "paused": message.status_data.get("paused", {}),
        "status_url": f"{conf.site_url()}{path}",
    }


def report_to_sender(message_id: int, event: str) -> Message | None:
    """Email the report of `event` to the message's sender; None when there is nothing to do
    (turned off, sent by the system, no address, already reported, no longer true)."""
    message = Message.objects.select_related("created_by").filter(pk=message_id).first()
    if (
        message is None
        or not conf.notify_sender()
        or message.created_by is None
        or message.context_type == Message.ContextType.SENDING_REPORT
        or not _still_true(message, event)
    ):
        return None
    if not recipients.notification_address(message.created_by):
        logger.warning("Message %s: its sender has no email address; no %s report sent.", message_id, event)
        return None
    if not transitions.mark_reported(message_id, event):
        return None
    report = Message.objects.create(
        context_type=Message.ContextType.SENDING_REPORT,
        message_type=["email"],
        virtual_message_receivers={"user_ids": [message.created_by_id]},
        metadata={"report_for": message_id, "event": event},
    )
    record(message, AuditEvent.Action.SENDER_NOTIFIED, None, event=event, report=report.pk)
    report.prepare_and_send(
        ReportSubject(event, _subject_of(message)), TEMPLATE, report_context(message, event)
    )
    return report

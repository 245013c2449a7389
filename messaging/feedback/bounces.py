"""Bounce messages from our own relay: read from the bounce mailbox, matched to their receiver
only by what we signed (the VERP return path when MESSAGING_BOUNCE_ADDRESS is set, else the
signed Message-ID they quote) and recorded like a provider's webhook event, for the receiver's
own address only. What cannot be read or matched is kept for staff."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from email import message_from_bytes, policy

from django.db import DatabaseError, transaction
from django.utils import timezone

from messaging import conf
from messaging.feedback import dsn, mailboxes, return_path
from messaging.feedback import reports as feedback
from messaging.feedback.signatures import receiver_id_from_message_id
from messaging.models import DeliveryEvent, MessageReceiver

logger = logging.getLogger(__name__)

RAW_KEPT = 64_000  # of a bounce, in its delivery event


@dataclass
class MailboxRun:
    """What one pass over the bounce mailbox did, per kind of message."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def read_mailbox(url: str) -> MailboxRun:
    """Record every message in the mailbox and remove it once recorded (committed)."""
    run = MailboxRun()
    with mailboxes.open_mailbox(url) as mailbox:
        for key, raw in mailbox.messages():
            try:
                with transaction.atomic():
                    run.add(process_report(raw))
            except DatabaseError:
                # Left in the mailbox for the next run; the others are still read.
                logger.exception("Bounce mailbox: message %s could not be recorded.", key)
                run.add("failed")
                continue
            mailbox.remove(key)
    return run


def read_configured_mailbox() -> MailboxRun | None:
    """The periodic read of MESSAGING_BOUNCE_MAILBOX (if set); a mailbox that cannot be read is
    logged and tried again next time (its messages stay where they are)."""
    url = conf.bounce_mailbox()
    if not url:
        return None
    try:
        return read_mailbox(url)
    except mailboxes.MailboxError as exc:
        logger.error("Bounce mailbox %s: %s", mailboxes.describe(url), exc)
        return None


def process_report(raw: bytes) -> str:
    """Record one message from the bounce mailbox; returns what it was: "bounce", "delay",
    "auto_reply", "duplicate" or "kept" (for staff: unreadable or not ours)."""
    report = dsn.parse_report(raw)
    if report.kind == dsn.Kind.UNRECOGNISED:
        return _keep(raw, report, report.reason)
    receiver = _find_receiver(report)
    if receiver is None:
        if report.kind == dsn.Kind.AUTO_REPLY:
            return "auto_reply"  # someone's out-of-office about mail that is not ours: nothing lost
        return _keep(raw, report, _no_match_reason())
    items = _feedback_items(report, raw)
    # An out-of-office note changes no outcome and suppresses nobody, and often comes from an
    # address the mail was forwarded to: it needs no address of its own.
    ours = [
        item
        for item in items
        if item.event_type == DeliveryEvent.Type.AUTORESPONDED or feedback.is_about(item, receiver)
    ]
    others = [item for item in items if item not in ours]
    if others:
        _keep(raw, report, feedback.not_about_reason(others[0], receiver))
    if not ours:
        return "kept"
    recorded = [feedback.record(item, receiver) for item in ours]
    return str(report.kind) if any(recorded) else "duplicate"


def _find_receiver(report: dsn.Report) -> MessageReceiver | None:
    """Only what we signed names a receiver: with VERP the return path alone (a quoted
    Message-ID is easy to quote), else our signed Message-ID."""
    if conf.bounce_address():
        ids = (return_path.receiver_id_from_address(address) for address in report.addressed_to)
        receiver_id = next((rid for rid in ids if rid is not None), None)
    else:
        receiver_id = receiver_id_from_message_id(report.original_message_id or "")
    if receiver_id is None:
        return None
    return MessageReceiver.objects.only("id", "send_to", "message_id").filter(pk=receiver_id).first()


def _no_match_reason() -> str:
    if conf.bounce_address():
        return "It was not sent to a signed return path of ours."
    return "It quotes no Message-ID of ours with a valid signature."


def _feedback_items(report: dsn.Report, raw: bytes) -> list[feedback.Feedback]:
    occurred = report.arrived_at or timezone.now()
    payload = {"raw": raw[:RAW_KEPT].decode("utf-8", "replace"), "subject": report.subject}
    if report.kind == dsn.Kind.AUTO_REPLY:
        return [
            feedback.Feedback(
                provider=DeliveryEvent.BOUNCE_MAILBOX,
                event_type=DeliveryEvent.Type.AUTORESPONDED,
                occurred=occurred,
                event_id=report.report_id,
                description=report.subject,
                payload=payload,
            )
        ]
    return [
        feedback.Feedback(
            provider=DeliveryEvent.BOUNCE_MAILBOX,
            event_type=DeliveryEvent.Type.BOUNCED if item.action == "failed" else DeliveryEvent.Type.DEFERRED,
            occurred=occurred,
            event_id=f"{report.report_id} {item.address}",
            recipient=item.address,
            description=" ".join(filter(None, (item.action, item.status))),
            mta_response=item.diagnostic,
            permanent=item.permanent,
            payload=payload,
        )
        for item in report.recipients
    ]


def _keep(raw: bytes, report: dsn.Report, reason: str) -> str:
    parsed = message_from_bytes(raw, policy=policy.compat32)
    feedback.keep_unmatched(
        provider="",
        sender=str(parsed.get("From", "")),
        subject=report.subject,
        reason=reason,
        raw=raw,
    )
    return "kept"

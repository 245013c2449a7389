"""Delivery feedback: what providers (webhooks) and mail servers (bounce messages) report about
an email after it was sent. Each report is stored once, sets the receiver's delivery outcome
and, for a hard bounce or a complaint, suppresses the address.

A report applies only to the address it is about: one naming another address than the
receiver's send_to (or none) changes nothing and is kept for staff (keep_unmatched)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import parseaddr

from django.db import IntegrityError, transaction

from messaging.engine import transitions
from messaging.feedback import suppressions
from messaging.models import DeliveryEvent, MessageReceiver, Suppression, UnmatchedBounce

logger = logging.getLogger(__name__)

Type = DeliveryEvent.Type
Outcome = MessageReceiver.Outcome

PAYLOAD_LIMIT = 32_000
UNMATCHED_KEPT = 1_000_000  # of a report kept for staff (bounces quote whole attachments)
# A reply code or enhanced status code saying the failure is temporary ("452", "4.2.2"), after
# a diagnostic type such as "smtp;" if there is one.
_TEMPORARY_REPLY = re.compile(r"^\s*(?:[a-z-]+;\s*)?(?:4\d\d\b|4\.\d{1,3}\.\d{1,3}\b)", re.IGNORECASE)
# anymail's reject reasons (anymail.signals.RejectReason) that mean "this address will not work".
_ADDRESS_REJECTED = {"invalid": Suppression.Reason.HARD_BOUNCE, "bounced": Suppression.Reason.HARD_BOUNCE}


@dataclass(frozen=True)
class Feedback:
    """One report about one sent email, whoever made it."""

    provider: str
    event_type: str
    occurred: datetime
    event_id: str = ""
    recipient: str = ""
    reject_reason: str = ""
    description: str = ""
    mta_response: str = ""
    # For a bounce: whether it is for good. None: judge from the reason and the server's reply.
    permanent: bool | None = None
    payload: dict = field(default_factory=dict)

    def unique_id(self) -> str:
        """The provider's event id, or a digest of the event when it has none: a repeated
        webhook is the same bytes again (its time is in them, if the provider gave one)."""
        if self.event_id:
            return self.event_id[:255]
        parts = [self.event_type, self.recipient, _as_json(self.payload)]
        return "sha256:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()

    @property
    def is_hard_bounce(self) -> bool:
        if self.permanent is not None:
            return self.permanent
        if self.reject_reason in ("timed_out", "blocked"):
            return False  # the address may well work: full mailbox, spam filter, greylisting
        return not _TEMPORARY_REPLY.match(self.mta_response or "")

    def outcome(self) -> str:
        return {
            Type.DELIVERED: Outcome.DELIVERED,
            Type.DEFERRED: Outcome.DEFERRED,
            Type.BOUNCED: Outcome.HARD_BOUNCE if self.is_hard_bounce else Outcome.SOFT_BOUNCE,
            Type.COMPLAINED: Outcome.COMPLAINED,
            Type.REJECTED: Outcome.REJECTED,
            Type.FAILED: Outcome.REJECTED,
        }.get(self.event_type, "")

    def suppression_reason(self) -> str:
        if self.event_type == Type.COMPLAINED or self.reject_reason == "spam":
            return Suppression.Reason.COMPLAINT
        if self.event_type == Type.BOUNCED:
            return Suppression.Reason.HARD_BOUNCE if self.is_hard_bounce else ""
        if self.event_type == Type.REJECTED:
            return _ADDRESS_REJECTED.get(self.reject_reason, "")
        return ""

    def detail(self) -> str:
        return " ".join((self.mta_response or self.description or self.reject_reason).split())


def same_address(one: str, other: str) -> bool:
    """Providers and mail servers echo an address in their own case, sometimes with a name."""
    one, other = parseaddr(one or "")[1].strip().lower(), parseaddr(other or "")[1].strip().lower()
    return bool(one) and one == other


def is_about(feedback: Feedback, receiver: MessageReceiver) -> bool:
    return same_address(feedback.recipient, receiver.send_to)


def not_about_reason(feedback: Feedback, receiver: MessageReceiver) -> str:
    if not feedback.recipient:
        return f"It names no address; receiver {receiver.pk} was sent to {receiver.send_to}."
    return f"It is about {feedback.recipient}, but receiver {receiver.pk} was sent to {receiver.send_to}."


def keep_unmatched(*, provider: str, sender: str, subject: str, reason: str, raw: bytes) -> UnmatchedBounce:
    """A report that changes nothing, kept for staff (the suppressed addresses page, the admin)."""
    if len(raw) > UNMATCHED_KEPT:
        reason = f"{reason} Only its first {UNMATCHED_KEPT // 1_000_000} MB are kept."
    logger.warning("Kept a report for staff: %s", _printable(reason))  # a lone surrogate cannot be logged
    return UnmatchedBounce.objects.create(
        provider=_printable(provider)[:50],
        sender=_printable(sender)[:255],
        subject=_printable(subject)[:255],
        reason=_printable(reason)[:255],
        raw=raw[:UNMATCHED_KEPT],
    )


def _printable(text: str) -> str:
    """What every database stores: no NUL, no lone surrogate (a forged post may hold either)."""
    return _storable(text).encode("utf-8", "replace").decode("utf-8")


def record(feedback: Feedback, receiver: MessageReceiver) -> DeliveryEvent | None:
    """Store the report on the receiver's timeline and apply it; None if it was stored before
    (a repeated webhook or a bounce read twice), and then nothing changes."""
    if feedback.event_type not in Type.values:
        return None
    feedback = _without_nul(feedback)
    try:
        with transaction.atomic():
            event = DeliveryEvent.objects.create(
                receiver=receiver,
                provider=feedback.provider[:50],
                event_id=feedback.unique_id(),
                event_type=feedback.event_type,
                reject_reason=(feedback.reject_reason or "")[:20],
                description=feedback.description or "",
                mta_response=feedback.mta_response or "",
                recipient=(feedback.recipient or "")[:255],
                occurred_datetime=feedback.occurred,
                payload=_capped(feedback.payload),
            )
            _apply(feedback, receiver, event)
    except IntegrityError:
        if DeliveryEvent.objects.filter(
            provider=feedback.provider[:50], event_id=feedback.unique_id()
        ).exists():
            return None  # stored before
        raise
    return event


def _apply(feedback: Feedback, receiver: MessageReceiver, event: DeliveryEvent) -> None:
    outcome = feedback.outcome()
    if outcome:
        transitions.record_outcome(receiver.pk, outcome, feedback.occurred, feedback.detail())
    reason = feedback.suppression_reason()
    if reason and suppressions.suppress(receiver.send_to, reason, feedback.detail(), event):
        logger.info("Suppressed %s: %s (%s)", receiver.send_to, reason, feedback.detail())


def _without_nul(feedback: Feedback) -> Feedback:
    """PostgreSQL stores no NUL character in text or jsonb; providers and bounces may send one."""
    texts = ("provider", "event_id", "recipient", "reject_reason", "description", "mta_response")
    return replace(feedback, **{name: _storable(getattr(feedback, name) or "") for name in texts})


def _storable(value):
    """What a JSON column takes on every database: no NUL characters, no NaN or infinities
    (Python's JSON parser accepts them; PostgreSQL's jsonb and SQLite's JSON_VALID do not)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.replace("\0", "")
    if isinstance(value, dict):
        return {_storable(str(key)): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def _as_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _capped(payload) -> dict:
    """The provider's event as it came, unless it is unreasonably large (then its start)."""
    text = _as_json(_storable(payload))
    if len(text) <= PAYLOAD_LIMIT:
        return json.loads(text)
    return {"truncated": text[:PAYLOAD_LIMIT]}

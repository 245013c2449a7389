"""Receivers held by recipients' preferences: their first status, their digest, settling and expiry."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from messaging.engine.transitions.messages import roll_up
from messaging.models import DeliveryMode, MessageReceiver

ReceiverStatus = MessageReceiver.Status


def initial_status(mode: str) -> str:
    """The status a new receiver starts in for its user's delivery mode."""
    if mode == DeliveryMode.OFF:
        return ReceiverStatus.SKIPPED
    if mode in (DeliveryMode.DAILY, DeliveryMode.WEEKLY):
        return ReceiverStatus.HELD
    return ReceiverStatus.NOT_SENT


def attach_due_to_digest(digest_message_id: int, held: QuerySet) -> int:
    """Held receivers of `held` not yet in a digest → each in its user's receiver of this digest
    message (the caller made one per user, in its transaction). Returns how many: the claim of
    the assembler that made the digest (no held receiver can be in two)."""
    users_receiver = MessageReceiver.objects.filter(
        message_id=digest_message_id, user_id=OuterRef("user_id")
    ).values("pk")[:1]
    return MessageReceiver.objects.filter(
        pk__in=held.values("pk"), status=ReceiverStatus.HELD, digest__isnull=True
    ).update(digest=Subquery(users_receiver))


def settle_digests() -> set[int]:
    """Held receivers whose digest was sent → sent (at the digest's time); whose digest failed
    for good (error, or a permanent failure such as no address) → error with its reason, so
    the status page shows them undelivered and staff can resend them one by one; whose digest
    was cancelled → waiting for the next one. Returns the ids of the messages whose counts
    changed, rolled up."""
    held = MessageReceiver.objects.filter(status=ReceiverStatus.HELD, digest__isnull=False)
    digest = MessageReceiver.objects.filter(pk=OuterRef("digest_id"))
    sent = held.filter(digest__status=ReceiverStatus.SENT)
    failed = held.filter(
        Q(digest__status=ReceiverStatus.ERROR)
        | Q(digest__status=ReceiverStatus.FAILED, digest__permanent_failure=True)
    )
    with transaction.atomic():
        message_ids = {
            *sent.values_list("message_id", flat=True),
            *failed.values_list("message_id", flat=True),
        }
        sent.update(
            status=ReceiverStatus.SENT,
            sent_datetime=digest.values("sent_datetime")[:1],
            sending_success_count=F("sending_success_count") + 1,
            next_attempt_datetime=None,
        )
        failed.update(
            status=ReceiverStatus.ERROR,
            last_error=digest.values("last_error")[:1],
            permanent_failure=digest.values("permanent_failure")[:1],
            next_attempt_datetime=None,
        )
        held.filter(digest__status=ReceiverStatus.CANCELLED).update(digest=None)
    for message_id in message_ids:
        roll_up(message_id)
    return message_ids


def expire_held(now: datetime | None = None) -> set[int]:
    """Held receivers not yet in a digest whose message's expiry passed → cancelled (expired):
    nothing is delivered after a message's expiry, in a digest neither."""
    now = now or timezone.now()
    expired = MessageReceiver.objects.filter(
        status=ReceiverStatus.HELD, digest__isnull=True, message__expires_at__lte=now
    )
    with transaction.atomic():
        message_ids = set(expired.values_list("message_id", flat=True).distinct())
        MessageReceiver.objects.filter(pk__in=expired.values("pk")).update(
            status=ReceiverStatus.CANCELLED,
            cancel_reason=MessageReceiver.CancelReason.EXPIRED,
            next_attempt_datetime=None,
        )
    for message_id in message_ids:
        roll_up(message_id)
    return message_ids

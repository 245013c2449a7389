"""Retention: delete old receivers, then the finished messages left without any.

What goes:
    - receivers created more than N days ago that are final (`sent`, `error`) and belong to a
      finished message (`sent`, `error`);
    - finished messages with no receivers left, each after writing a `deleted` audit event with
      its status, context type, creation time and last published receiver counts.
What stays:
    - every receiver that may still be sent: `not_sent`, and `failed` (a retry is pending or a
      resend may follow), and every receiver of a message that is queued, preparing, sending
      or blocked, however old;
    - drafts and messages in progress, with or without receivers;
    - the audit trail: events keep their message's number and subject when the message goes
      (AuditEvent.message and .receiver are SET_NULL); an item sent in a digest that is deleted
      loses only its link to it (MessageReceiver.digest is SET_NULL).

Memory stays flat however many rows go: each batch is a list of at most `batch_size` ids,
selected by keyset (id > last id, ordered by id), and deleted in its own transaction with a
fixed number of queries (select ids, unlink audit events and digest items, DELETE ... WHERE id IN ids); no
receiver row is ever loaded. Nothing here writes a status (messaging.engine.transitions owns
those): rows are only deleted, and each batch re-checks the conditions under a row lock
(PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the IMMEDIATE transaction's write lock), so a
receiver a resend has just reset, or one a worker holds, is not deleted.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import router, transaction
from django.utils import timezone

from messaging import conf
from messaging.engine import recounting
from messaging.models import AuditEvent, DeliveryEvent, Message, MessageReceiver, Suppression

logger = logging.getLogger(__name__)

RECEIVER_BATCH_SIZE = 2000
MESSAGE_BATCH_SIZE = 500


def apply_retention() -> None:
    """The nightly task: nothing unless MESSAGING_RECEIVER_RETENTION_DAYS is set."""
    days = conf.retention_days()
    if days is None:
        return
    receivers = delete_old_receivers(days)
    # A message is never younger than its receivers, so the age limit keeps no message that
    # the first step emptied; it keeps a recent message that failed before having receivers
    # (e.g. preparing raised) visible to staff for the retention period.
    messages = delete_messages_without_receivers(older_than_days=days)
    logger.info("Retention (%s days): deleted %s receiver(s), %s message(s).", days, receivers, messages)


def cutoff_for(days: int) -> datetime:
    if days < 0:
        raise ValueError("days must be zero or more.")
    return timezone.now() - timedelta(days=days)


def deletable_receivers(cutoff: datetime):
    """Final receivers, created before `cutoff`, of finished messages."""
    return (
        MessageReceiver.objects.filter_old_receivers(cutoff)
        .final()
        .filter(message__status__in=Message.FINISHED)
    )


def delete_old_receivers(days: int, batch_size: int = RECEIVER_BATCH_SIZE) -> int:
    """Delete final receivers of finished messages created more than `days` days ago.

    Returns how many were deleted."""
    cutoff = cutoff_for(days)
    using = router.db_for_write(MessageReceiver)
    deleted = 0
    last_id = 0
    message_ids: set[int] = set()
    while True:
        with transaction.atomic(using=using):
            rows = list(
                deletable_receivers(cutoff)
                .using(using)
                .filter(pk__gt=last_id)
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("pk")
                .values_list("pk", "message_id")[:batch_size]
            )
            if not rows:
                break
            ids = [pk for pk, _message_id in rows]
            message_ids.update(message_id for _pk, message_id in rows)
            # What Django's collector would do for AuditEvent.receiver (SET_NULL) and the
            # receivers' delivery events (CASCADE; a suppression keeps its address and reason),
            # without loading the receivers.
            AuditEvent.objects.using(using).filter(receiver_id__in=ids).update(receiver=None)
            # Items sent in a digest that goes now keep their status, not the link to it.
            MessageReceiver.objects.using(using).filter(digest_id__in=ids).update(digest=None)
            events = DeliveryEvent.objects.using(using).filter(receiver_id__in=ids)
            Suppression.objects.using(using).filter(event__in=events).update(event=None)
            events._raw_delete(using)
            deleted += MessageReceiver.objects.using(using).filter(pk__in=ids)._raw_delete(using)
        last_id = ids[-1]
        if len(ids) < batch_size:
            break
    # The raw deletes sent no signals: correct the published counts of the messages that keep
    # receivers (an emptied one keeps its last counts for its `deleted` audit event).
    kept = MessageReceiver.objects.filter(message_id__in=message_ids).values_list("message_id", flat=True)
    recounting.recount_messages(kept.order_by().distinct())
    if deleted:
        logger.info("Retention: deleted %s receiver(s) created before %s.", deleted, cutoff.isoformat())
    return deleted


def deletable_messages(cutoff: datetime | None = None):
    """Finished messages with no receivers left (created before `cutoff`, if given)."""
    messages = Message.objects.finished().filter_message_with_no_message_receivers()
    if cutoff is not None:
        messages = messages.filter(created_datetime__lt=cutoff)
    return messages


def delete_messages_without_receivers(
    older_than_days: int | None = None, batch_size: int = MESSAGE_BATCH_SIZE
) -> int:
    """Delete finished (sent, error) messages that have no receivers left; drafts and messages
    in progress are never deleted. `older_than_days`: only messages created before then.

    Each message first gets a `deleted` audit event (it keeps the message's number, subject,
    status and last published counts); its earlier events stay, with `message` NULL.
    Returns how many messages were deleted."""
    cutoff = None if older_than_days is None else cutoff_for(older_than_days)
    using = router.db_for_write(Message)
    deleted = 0
    last_id = 0
    while True:
        with transaction.atomic(using=using):
            messages = list(
                deletable_messages(cutoff)
                .using(using)
                .filter(pk__gt=last_id)
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("pk")
                .only("pk", "status", "status_data", "context_type", "created_datetime", "composed_content")[
                    :batch_size
                ]
            )
            if not messages:
                break
            for message in messages:
                deletion_event(message).save(using=using)
            ids = [message.pk for message in messages]
            # The collector unlinks the audit events (SET_NULL); the filter repeats "no
            # receivers", so a receiver could never be cascaded away with its message.
            _total, by_model = (
                Message.objects.using(using)
                .filter(pk__in=ids)
                .filter_message_with_no_message_receivers()
                .delete()
            )
            deleted += by_model.get(Message._meta.label, 0)
        last_id = ids[-1]
        if len(ids) < batch_size:
            break
    if deleted:
        logger.info("Retention: deleted %s message(s) without receivers.", deleted)
    return deleted


def deletion_event(message: Message) -> AuditEvent:
    """The `deleted` event: save() snapshots the message's number and subject; the details
    keep what the trail needs once the message is gone."""
    summary = message.status_data.get("summary", {})
    counts = summary.get("receiver_counts", {})
    return AuditEvent(
        message=message,
        action=AuditEvent.Action.DELETED,
        details={
            "status": message.status,
            "context_type": message.context_type,
            "created_datetime": message.created_datetime.isoformat(),
            "receiver_counts": counts,
            "receivers": summary.get("total", sum(counts.values())),
        },
    )

"""The sweeper: finds work whose worker or task is gone and sets it going again.

Runs every MESSAGING_SWEEP_MINUTES (and when a consumer starts; queue.sweep); it also starts
scheduled messages whose time has come and expires what is past its expiry, so neither depends
on huey's in-memory schedule surviving a restart. Every step is a guarded
transition, so sweepers on several hosts at once do no harm. Liveness is decided by facts, not
clocks, where a fact exists: a claim is live while its lease runs (workers renew it while they
send), a preparation while its transaction holds the message row's lock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from messaging import conf
from messaging.engine import controlling, queue, resending, sending, transitions
from messaging.engine.status import error_entry
from messaging.models import Message, MessageReceiver

logger = logging.getLogger(__name__)


def sweep() -> None:
    from messaging.operations import heartbeats

    for message_id in Message.objects.past_expiry().values_list("pk", flat=True):
        controlling.expire(message_id)
    # Held receivers of a message that expired after it was sent, and those whose digest went
    # out (or was cancelled) since: the digest task does the same, the sweeper in case it is late.
    transitions.expire_held()
    transitions.settle_digests()
    transitions.settle_stopped()
    for message in Message.objects.due_to_start():
        sending.start_scheduled(message)
    resending.retry_due_receivers()
    for message_id in messages_needing_delivery():
        queue.deliver_message(message_id)
    for message_id in due_blocked_messages():
        queue.retry_blocked_message(message_id)
    for message_id in unfinished_roll_ups():
        transitions.roll_up(message_id)
    for message_id in Message.objects.filter(status=Message.Status.PREPARING).values_list("pk", flat=True):
        recovered = recover_dead_preparation(message_id)
        if recovered == Message.Status.QUEUED:
            queue.send_composed_message(message_id)
        elif recovered == Message.Status.SENDING:
            queue.deliver_message(message_id)
    for message_id in lost_queued_messages():
        queue.send_composed_message(message_id)
    heartbeats.record_sweep()


def messages_needing_delivery() -> list[int]:
    """Sending messages with receivers nobody holds a live claim on."""
    return list(
        MessageReceiver.objects.claimable()
        .filter(message__status=Message.Status.SENDING)
        .order_by()
        .values_list("message_id", flat=True)
        .distinct()
    )


def unfinished_roll_ups() -> list[int]:
    """Sending messages with no receiver left to deliver: their worker died before rolling up."""
    not_sent = MessageReceiver.objects.filter(message=OuterRef("pk"), status=MessageReceiver.Status.NOT_SENT)
    return list(
        Message.objects.filter(status=Message.Status.SENDING)
        .filter(~Exists(not_sent))
        .values_list("pk", flat=True)
    )


def due_blocked_messages(now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return [
        pk
        for pk, data in Message.objects.filter(status=Message.Status.BLOCKED).values_list("pk", "status_data")
        if datetime.fromisoformat(data.get("blocked", {}).get("next_attempt", now.isoformat())) <= now
    ]


def retry_blocked(message_id: int) -> bool:
    """Try a blocked message's mail server again once its delay is over: blocked → sending and
    deliver (which blocks it again, with a longer delay, if the server still refuses)."""
    if message_id not in due_blocked_messages() or not transitions.unblock(message_id):
        return False
    from messaging.engine import delivery

    return delivery.deliver_message(message_id)


def recover_dead_preparation(message_id: int) -> str | None:
    """Recover a preparation whose worker died; leave a live one alone, however long it runs.

    A live preparation holds its message row locked (PostgreSQL: SKIP LOCKED passes it by;
    SQLite: its transaction holds the write lock, so this waits and then finds it `sending`).
    A preparation is also left alone during its first lease, the moment between committing
    `preparing` and taking the lock. Returns the status it moved the message to, if any."""
    cutoff = timezone.now() - timedelta(seconds=conf.lease_seconds())
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk=message_id, status=Message.Status.PREPARING)
            .first()
        )
        if message is None or _preparing_since(message) >= cutoff:
            return None
        if message.receivers.exists():  # receivers committed without the status (older versions)
            return Message.Status.SENDING if transitions.adopt_prepared(message_id) else None
        if message.composed_content:
            # Prepared again from its stored content.
            return Message.Status.QUEUED if transitions.requeue_preparation(message) else None
        # Created by another app: its subject generator and template lived only in that process.
        entry = error_entry("Preparing was interrupted (the worker stopped); send the message again.")
        return Message.Status.ERROR if transitions.fail(message, entry) else None


def lost_queued_messages() -> list[int]:
    """Queued messages no worker started within a lease: their task was lost (huey does not
    acknowledge tasks, so a consumer killed while holding it drops it)."""
    cutoff = timezone.now() - timedelta(seconds=conf.lease_seconds())
    return [
        pk
        for pk, data in Message.objects.filter(status=Message.Status.QUEUED).values_list("pk", "status_data")
        if datetime.fromisoformat(data.get("queued_datetime", cutoff.isoformat())) <= cutoff
    ]


def _preparing_since(message: Message) -> datetime:
    started = message.status_data.get("preparing_started")
    return datetime.fromisoformat(started) if started else message.created_datetime

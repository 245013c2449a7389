"""The sweeper: finds work whose worker or task is gone and sets it going again.

Runs every MESSAGING_SWEEP_MINUTES (and when a consumer starts; queue.sweep); it also starts
scheduled messages whose time has come and expires what is past its expiry, so neither depends
on huey's in-memory schedule surviving a restart. Every step is a guarded
transition, so sweepers on several hosts at once do no harm. Liveness is decided by leases on the
database's clock: a claim is live while its lease runs (workers renew it while they send), a
preparation while its lease runs (it renews it with every batch of receivers it commits).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef
from django.utils import timezone

from messaging import conf
from messaging.engine import controlling, delivery, preparing, queue, resending, sending, transitions
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
    for message_id in [*lost_queued_messages(), *dead_streaming_preparations()]:
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
    return delivery.deliver_message(message_id)


def recover_dead_preparation(message_id: int) -> str | None:
    """Take over a preparation whose lease ran out (a live one renews it with every batch it
    commits, so this means its worker died or stalled for a whole lease), and carry it on:

    - a staff-composed message is queued again; its next preparation keeps the receivers
      already committed and adds the missing ones (nobody gets two, nobody is left out);
    - a digest being assembled is discarded; its items wait for the next digest;
    - a message from another app (its subject generator and template lived only in the dead
      process) has its receivers discarded and ends in error, with the reason.

    A preparation that was only slow commits nothing more once taken over (its next batch
    finds it is not its own). Returns the status it moved the message to, if any (None for a
    discarded digest: it is gone)."""
    message = Message.objects.filter(pk=message_id, status=Message.Status.PREPARING).first()
    if message is None or not transitions.preparation_lease_ran_out(message):
        return None
    sweeper = f"sweeper:{delivery.new_worker_id()}"
    if not transitions.take_over_preparation(message, sweeper):
        return None
    logger.warning(
        "Message %s: preparation by %s stopped renewing its lease; taken over",
        message_id,
        message.status_data.get("preparing_taken_over_from"),
    )
    if message.context_type == Message.ContextType.DIGEST:
        transitions.discard_digest_assembly(message_id, sweeper)
        return None
    if message.composed_content:
        return Message.Status.QUEUED if transitions.requeue_preparation(message, sweeper) else None
    if not preparing.discard_receivers(message, sweeper):
        return None
    entry = error_entry("Preparing was interrupted (the worker stopped); send the message again.")
    return Message.Status.ERROR if transitions.fail_preparation(message, sweeper, entry) else None


def dead_streaming_preparations() -> list[int]:
    """Staff sends still being prepared while their first receivers are delivered
    (sending.Streaming) whose preparation's lease ran out: its worker died. The task that
    prepares a staff send carries it on (composing.send_composed → sending.resume_preparation)."""
    streaming = Message.objects.filter(status__in=Message.STREAMING, status_data__still_preparing=True)
    return [
        message.pk
        for message in streaming.only("status_data", "created_datetime")
        if transitions.preparation_lease_ran_out(message)
    ]


def lost_queued_messages() -> list[int]:
    """Queued messages no worker started within a lease: their task was lost (huey does not
    acknowledge tasks, so a consumer killed while holding it drops it)."""
    cutoff = timezone.now() - timedelta(seconds=conf.lease_seconds())
    return [
        pk
        for pk, data in Message.objects.filter(status=Message.Status.QUEUED).values_list("pk", "status_data")
        if datetime.fromisoformat(data.get("queued_datetime", cutoff.isoformat())) <= cutoff
    ]

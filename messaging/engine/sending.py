"""prepare_and_send: draft → preparing → sending → sent/error, each status committed.

Receivers are committed batch by batch (engine/preparing.py), each batch renewing the
preparation's lease; the move to `sending` comes once the last batch is in. Until then no
receiver can be claimed (claims take only a sending message's receivers). A preparation whose
worker died is found by its lease running out and taken over by the sweeper
(maintenance.recover_dead_preparation); one that raised discards its receivers and is `error`.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from messaging import conf
from messaging.engine import delivery, preparing, queue, recipients, transitions
from messaging.engine.preparing import PreparationTakenOver
from messaging.engine.status import exception_entry
from messaging.models import AuditEvent, Message
from messaging.operations import audit

logger = logging.getLogger(__name__)


class NothingToSend(ValueError):
    pass


class InsideTransaction(RuntimeError):
    """prepare_and_send was called inside an open transaction (see refuse_inside_transaction)."""


def refuse_inside_transaction() -> None:
    """prepare_and_send commits each status, each batch of receivers and each result as it
    goes: that is what lets the status page follow a send and a crash lose nothing. Inside the
    caller's transaction none of it would hold (and other workers could not see the receivers),
    so it refuses, by Django's own rule for durable blocks (a test case's transaction is allowed)."""
    if not connection.in_atomic_block:
        return
    try:
        with transaction.atomic(durable=True):  # raises before any SQL when nested
            pass
    except RuntimeError:
        raise InsideTransaction(
            "prepare_and_send() cannot run inside a database transaction "
            "(transaction.atomic or ATOMIC_REQUESTS): it commits each step as it goes. Call it once "
            "the transaction has committed, e.g. transaction.on_commit(lambda: "
            "message.prepare_and_send(...)), or from a huey task."
        ) from None


def start_preparing(message: Message, preparer: str) -> None:
    """Guard and claim: only a valid draft (or queued message) moves to preparing, and once."""
    if message.status not in (Message.Status.DRAFT, Message.Status.QUEUED):
        raise ValueError(
            f"Message #{message.pk} is {message.status}, not a draft; "
            "only a draft can be sent with prepare_and_send."
        )
    message.clean_message_type()
    message.validate_virtual_message_receivers()
    if not transitions.start_preparing(message, preparer):
        raise ValueError(f"Message #{message.pk} is no longer a draft; another process sent it.")


def prepare(message: Message, preparer: str, subject_generator, template_name, template_context) -> bool:
    """Create the receivers batch by batch (each batch committed), then move to sending (or
    scheduled); True if it got there. An exception discards the receivers created and sets
    error, recorded, not raised; a preparation taken over by the sweeper just stops."""
    started = timezone.now()
    try:
        message.create_message_receivers(
            subject_generator=subject_generator,
            template_name=template_name,
            template_context=template_context,
        )
        # Counted, not summed: a resumed preparation keeps what an earlier one committed.
        count = message.receivers.count()
        if not count:
            raise NothingToSend("None of the message's users exist; nothing to send.")
        summary = {
            "receiver_count": count,
            "prepared_seconds": round((timezone.now() - started).total_seconds(), 3),
        }
        if "skipped_user_ids" in message.status_data:
            summary["skipped_user_ids"] = message.status_data["skipped_user_ids"]
        if not transitions.finish_preparing(message, preparer, **summary):
            raise PreparationTakenOver
    except PreparationTakenOver:
        logger.warning("Message %s: preparation was taken over by the sweeper; stopping.", message.pk)
        return False
    except Exception as exc:  # recorded on the message; the caller's process must go on
        logger.exception("Preparing message %s failed", message.pk)
        discard_and_fail(message, preparer, exc)
        return False
    transitions.roll_up(message.pk)  # publish the counts the status page shows
    return True


def discard_and_fail(message: Message, preparer: str, exc: Exception) -> None:
    """A preparation that raised leaves no receivers (bad input loses nothing: the message keeps
    its content and recipients, and says why in its errors). Should the database fail here too,
    the message stays `preparing`, and the sweeper finishes the job once the lease runs out."""
    try:
        if preparing.discard_receivers(message, preparer):
            transitions.fail_preparation(message, preparer, exception_entry(exc))
    except Exception:
        logger.exception("Message %s: the failed preparation is left to the sweeper", message.pk)


def validate_schedule(
    send_at: datetime | None, expires_at: datetime | None, now: datetime | None = None
) -> None:
    """Raise ValueError for times that cannot be meant: naive ones, or an expiry that is not
    after the send time (or already past)."""
    now = now or timezone.now()
    for name, value in (("send_at", send_at), ("expires_at", expires_at)):
        if value is not None and timezone.is_naive(value):
            raise ValueError(f"{name} must be timezone-aware, got {value!r}.")
    if expires_at is not None and expires_at <= max(send_at or now, now):
        raise ValueError(
            f"expires_at ({expires_at.isoformat()}) must be after the send time and in the future."
        )


def prepare_and_send(
    message: Message,
    subject_generator,
    template_name,
    template_context,
    *,
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> None:
    """Prepare every receiver and deliver them; with `send_at` in the future the prepared
    message waits as `scheduled` (the sweeper starts it); `expires_at`: nothing is delivered
    after it. A send_at in the past means now. Raises InsideTransaction, changing nothing,
    inside an open transaction."""
    refuse_inside_transaction()
    if send_at is not None or expires_at is not None:
        validate_schedule(send_at, expires_at)
        message.send_at = send_at or message.send_at
        message.expires_at = expires_at or message.expires_at
        Message.objects.filter(pk=message.pk).update(send_at=message.send_at, expires_at=message.expires_at)
    preparer = delivery.new_worker_id()
    start_preparing(message, preparer)
    if not prepare(message, preparer, subject_generator, template_name, template_context):
        message.refresh_from_db(fields=["status", "status_data"])
        return
    if message.status == Message.Status.SCHEDULED:
        schedule_start(message)
        return
    # Other workers join in (claims keep them disjoint): one helper per extra worker.
    queue.deliver_message_by(message.pk, conf.delivery_helpers())
    delivery.deliver_message(message.pk, wait_for_others=True)
    message.refresh_from_db(fields=["status", "status_data"])


def schedule_start(message: Message) -> None:
    """Ask huey to start the message on time; the sweeper starts it anyway should the
    consumer's schedule be lost (a restart of Redis, a flushed queue)."""
    queue.after_commit(queue.start_scheduled_message_at, message.pk, message.send_at)


def start_scheduled(message: Message) -> str | None:
    """A scheduled message whose time has come: a staff-composed one is queued (its recipients
    resolved now) and prepared; one prepared through the API starts delivering. Returns the
    new status, or None if it was not due (rescheduled, taken back, already started)."""
    if message.receivers.exists():
        if not transitions.start_scheduled_delivery(message.pk):
            return None
        queue.deliver_message_by(message.pk, 1 + conf.delivery_helpers())
        new_status = Message.Status.SENDING
    else:
        user_ids = recipients.resolved_user_ids(message)
        if not transitions.queue_scheduled(message, user_ids):
            return None
        queue.after_commit(queue.send_composed_message, message.pk)
        new_status = Message.Status.QUEUED
    audit.record(message, AuditEvent.Action.STARTED)
    return new_status

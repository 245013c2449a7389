"""prepare_and_send: draft → preparing → sending → sent/error, each status committed.

Receivers are committed batch by batch (engine/preparing.py), each batch renewing the
preparation's lease. From code (the SPEC's prepare_and_send), the move to `sending` comes once
the last batch is in: until then no receiver can be claimed (claims take only a sending
message's receivers), and one that raised discards its receivers and is `error`. A staff send
streams (`stream=True`): it moves to `sending` as soon as its first receivers are committed, so
other workers deliver them while the rest are prepared (the first email goes out within about a
second whatever the number of recipients); the message cannot end before the last batch is in
(transitions.start_streaming), and one that raises part-way keeps what it prepared (some of it
may be delivered already) and ends `error`. A preparation whose worker died is found by its
lease running out: the sweeper takes it over (maintenance.recover_dead_preparation) or, for a
streaming one, queues its message again to be prepared on (composing.send_composed).
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


def prepare(
    message: Message,
    preparer: str,
    subject_generator,
    template_name,
    template_context,
    streaming: Streaming | None = None,
) -> bool:
    """Create the receivers batch by batch (each batch committed), then move to sending (or
    scheduled); True if it got there. An exception discards the receivers created and sets
    error, recorded, not raised; a preparation taken over by the sweeper just stops. With an
    enabled `streaming`, sending starts with the first batch and an exception keeps what was
    prepared."""
    started = timezone.now()
    streaming = streaming or Streaming(message, preparer, enabled=False)
    try:
        message.create_message_receivers(
            subject_generator=subject_generator,
            template_name=template_name,
            template_context=template_context,
            after_batch=streaming.after_batch,
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
        if not streaming.finish(summary):
            raise PreparationTakenOver
    except PreparationTakenOver:
        logger.warning(
            "Message %s: preparation is no longer this worker's (taken over, or stopped).", message.pk
        )
        return False
    except Exception as exc:  # recorded on the message; the caller's process must go on
        logger.exception("Preparing message %s failed", message.pk)
        streaming.fail(exc)
        return False
    transitions.roll_up(message.pk)  # publish the counts the status page shows
    return True


class Streaming:
    """A staff send's preparation that lets workers deliver while it goes on: after the first
    batch with receivers is committed, preparing → sending and delivery tasks are queued."""

    def __init__(self, message: Message, preparer: str, *, enabled: bool):
        self.message, self.preparer = message, preparer
        self.enabled = enabled and not (message.send_at and message.send_at > timezone.now())
        self.started = bool(message.status_data.get("still_preparing"))  # resumed: it streams already
        self.failed = False  # it streamed, then raised

    def after_batch(self, created: int) -> None:
        if not self.enabled or self.started or not created:
            return
        if not transitions.start_streaming(self.message, self.preparer):
            raise PreparationTakenOver
        self.started = True
        queue.deliver_message_by(self.message.pk, max(1, conf.delivery_helpers()))

    def finish(self, summary: dict) -> bool:
        if self.started:
            return transitions.finish_streaming(self.message, self.preparer, **summary)
        return transitions.finish_preparing(self.message, self.preparer, **summary)

    def fail(self, exc: Exception) -> None:
        if self.started:
            prepared = self.message.receivers.count()
            entry = exception_entry(exc)
            entry["error_message"] = (
                f"Preparing stopped after {prepared} receiver(s); the other recipients got nothing. "
                f"{entry['error_message']}"
            )
            self.failed = transitions.fail_streaming(self.message, self.preparer, entry)
            transitions.roll_up(self.message.pk)  # it ends error once what was prepared is done
        else:
            discard_and_fail(self.message, self.preparer, exc)


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
    stream: bool = False,
) -> None:
    """Prepare every receiver and deliver them; with `send_at` in the future the prepared
    message waits as `scheduled` (the sweeper starts it); `expires_at`: nothing is delivered
    after it. A send_at in the past means now. Raises InsideTransaction, changing nothing,
    inside an open transaction. `stream`: other workers start delivering while the rest is
    prepared (a staff send; see the module's docstring)."""
    refuse_inside_transaction()
    if send_at is not None or expires_at is not None:
        validate_schedule(send_at, expires_at)
        message.send_at = send_at or message.send_at
        message.expires_at = expires_at or message.expires_at
        Message.objects.filter(pk=message.pk).update(send_at=message.send_at, expires_at=message.expires_at)
    preparer = delivery.new_worker_id()
    start_preparing(message, preparer)
    prepare_and_deliver(message, preparer, subject_generator, template_name, template_context, stream=stream)


def prepare_and_deliver(
    message: Message, preparer: str, subject_generator, template_name, template_context, *, stream: bool
) -> None:
    """`preparer`'s preparation (started, or taken over to be resumed), then delivery."""
    streaming = Streaming(message, preparer, enabled=stream)
    if not prepare(message, preparer, subject_generator, template_name, template_context, streaming):
        if streaming.failed:  # what it prepared is delivered all the same (it ends error)
            delivery.deliver_message(message.pk, wait_for_others=True)
        message.refresh_from_db(fields=["status", "status_data"])
        return
    if message.status == Message.Status.SCHEDULED:
        schedule_start(message)
        return
    if not streaming.started:  # a streaming one queued them with its first batch
        # Other workers join in (claims keep them disjoint): one helper per extra worker.
        queue.deliver_message_by(message.pk, conf.delivery_helpers())
    delivery.deliver_message(message.pk, wait_for_others=True)
    message.refresh_from_db(fields=["status", "status_data"])


def resume_preparation(message: Message, subject_generator, template_name, template_context) -> bool:
    """A staff send whose preparation died after its first receivers went out (its lease ran
    out while it was still preparing; the sweeper queues it again: maintenance): this worker
    takes it over, prepares the users still missing (nobody gets two) and delivers. False if it
    was not dead, or another worker took it first."""
    preparer = delivery.new_worker_id()
    if not transitions.preparation_lease_ran_out(message):
        return False
    if not transitions.take_over_preparation(message, preparer):
        return False
    logger.warning("Message %s: resuming a preparation whose worker stopped.", message.pk)
    prepare_and_deliver(message, preparer, subject_generator, template_name, template_context, stream=True)
    return True


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

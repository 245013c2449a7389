"""prepare_and_send: draft → preparing → sending → sent/error, each status committed.

The receivers and the move to `sending` are committed in one transaction, which also holds a
lock on the message row for as long as preparing runs: that lock is how the sweeper tells a
slow preparation (never touched) from a dead one (recovered; transitions.lock_preparation).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from messaging import conf
from messaging.models import Message
from messaging.services import delivery, transitions
from messaging.services.status import exception_entry

logger = logging.getLogger(__name__)


class PreparationTakenOver(Exception):
    """The sweeper recovered this preparation (it looked dead); its work is rolled back."""


class NothingToSend(ValueError):
    pass


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
    """Create every receiver and move to sending in one transaction, or create none: an
    exception sets error and is recorded, not raised."""
    started = timezone.now()
    try:
        with transaction.atomic():
            if not transitions.lock_preparation(message, preparer):
                raise PreparationTakenOver
            count = message.create_message_receivers(
                subject_generator=subject_generator,
                template_name=template_name,
                template_context=template_context,
            )
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
        transitions.fail(message, exception_entry(exc))
        return False
    transitions.roll_up(message.pk)  # publish the counts the status page shows
    return True


def prepare_and_send(message: Message, subject_generator, template_name, template_context) -> None:
    preparer = delivery.new_worker_id()
    start_preparing(message, preparer)
    if not prepare(message, preparer, subject_generator, template_name, template_context):
        message.refresh_from_db(fields=["status", "status_data"])
        return
    # Other workers join in (claims keep them disjoint): one helper per extra worker.
    from messaging import tasks

    for _helper in range(conf.delivery_helpers()):
        # robust: helpers are optional; this worker delivers everything by itself anyway.
        transaction.on_commit(lambda: tasks.deliver_message(message.pk), robust=True)
    delivery.deliver_message(message.pk, wait_for_others=True)
    message.refresh_from_db(fields=["status", "status_data"])

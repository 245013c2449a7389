"""prepare_and_send: draft → preparing → sending → sent/error, each status committed."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging.models import Message
from messaging.services import delivery
from messaging.services.status import exception_entry, refresh_message_status, with_error

logger = logging.getLogger(__name__)


def _set_status(message: Message, status: str, **status_data) -> None:
    message.status = status
    message.status_data = {**message.status_data, **status_data}
    Message.objects.filter(pk=message.pk).update(status=status, status_data=message.status_data)


def start_preparing(message: Message) -> None:
    """Guard and claim: only a valid draft moves to preparing, and only once."""
    if message.status != Message.Status.DRAFT:
        raise ValueError(
            f"Message #{message.pk} is {message.status}, not a draft; "
            "only a draft can be sent with prepare_and_send."
        )
    message.clean_message_type()
    message.validate_virtual_message_receivers()
    won = Message.objects.filter(pk=message.pk, status=Message.Status.DRAFT).update(
        status=Message.Status.PREPARING,
        message_type=message.message_type,
        status_data={**message.status_data, "preparing_started": timezone.now().isoformat()},
    )
    if not won:
        raise ValueError(f"Message #{message.pk} is no longer a draft; another process sent it.")
    message.refresh_from_db(fields=["status", "status_data", "message_type"])


def prepare(message: Message, subject_generator, template_name, template_context) -> bool:
    """Create every receiver, or none: an exception sets error and is recorded, not raised."""
    started = timezone.now()
    try:
        count = message.create_message_receivers(
            subject_generator=subject_generator,
            template_name=template_name,
            template_context=template_context,
        )
    except Exception as exc:  # recorded on the message; the caller's process must go on
        logger.exception("Preparing message %s failed", message.pk)
        message.status = Message.Status.ERROR
        message.status_data = with_error(message.status_data, exception_entry(exc))
        Message.objects.filter(pk=message.pk).update(status=message.status, status_data=message.status_data)
        return False
    if not count:
        message.status_data = with_error(
            message.status_data,
            exception_entry(ValueError("None of the message's users exist; nothing to send.")),
        )
        _set_status(message, Message.Status.ERROR)
        return False
    _set_status(
        message,
        Message.Status.SENDING,
        receiver_count=count,
        prepared_seconds=round((timezone.now() - started).total_seconds(), 3),
        sending_started=timezone.now().isoformat(),
    )
    refresh_message_status(message.pk)  # publish the counts the status page shows
    return True


def prepare_and_send(message: Message, subject_generator, template_name, template_context) -> None:
    start_preparing(message)
    if not prepare(message, subject_generator, template_name, template_context):
        return
    # Other workers join in (claims keep them disjoint): one helper per extra worker.
    from messaging import tasks

    for _helper in range(settings.MESSAGING_DELIVERY_HELPERS):
        # robust: helpers are optional; this worker delivers everything by itself anyway.
        transaction.on_commit(lambda: tasks.deliver_message(message.pk), robust=True)
    delivery.deliver_message(message.pk, wait_for_others=True)
    refresh_message_status(message.pk)
    message.refresh_from_db(fields=["status", "status_data"])

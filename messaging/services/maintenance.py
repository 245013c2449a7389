"""Housekeeping: retention, orphaned messages, and resuming work whose worker is gone."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from messaging.models import Message, MessageReceiver
from messaging.services.delivery import lease_seconds
from messaging.services.status import error_entry, with_error

logger = logging.getLogger(__name__)


def delete_old_receivers(days: int) -> int:
    cutoff = timezone.now() - timedelta(days=days)
    _total, by_model = MessageReceiver.objects.filter_old_receivers(cutoff).delete()
    return by_model.get(MessageReceiver._meta.label, 0)


def delete_messages_without_receivers() -> int:
    # Drafts have no receivers yet and are kept.
    orphans = Message.objects.filter_message_with_no_message_receivers().exclude(
        status__in=[Message.Status.DRAFT, Message.Status.PREPARING]
    )
    _total, by_model = orphans.delete()
    return by_model.get(Message._meta.label, 0)


def messages_needing_delivery() -> list[int]:
    """Sending messages with receivers nobody holds a live claim on."""
    now = timezone.now()
    return list(
        MessageReceiver.objects.claimable(now)
        .filter(message__status=Message.Status.SENDING)
        .order_by()
        .values_list("message_id", flat=True)
        .distinct()
    )


def stale_preparing_messages() -> list[Message]:
    """Messages stuck in preparing longer than a lease: their worker died mid-preparation
    (the preparing transaction rolled back, so they have no receivers)."""
    cutoff = timezone.now() - timedelta(seconds=lease_seconds())
    return [
        m
        for m in Message.objects.filter(
            status=Message.Status.PREPARING
        ).filter_message_with_no_message_receivers()
        if _preparing_since(m) < cutoff
    ]


def lost_queued_messages() -> list[Message]:
    """Queued drafts no worker started within a lease: their task was lost (huey does not
    acknowledge tasks, so a consumer killed while holding it drops it)."""
    cutoff = timezone.now() - timedelta(seconds=lease_seconds())
    return [
        m
        for m in Message.objects.drafts().filter(status_data__has_key="queued_datetime")
        if timezone.datetime.fromisoformat(m.status_data["queued_datetime"]) < cutoff
    ]


def _preparing_since(message: Message):
    started = message.status_data.get("preparing_started")
    return timezone.datetime.fromisoformat(started) if started else message.created_datetime


def recover_stale_preparing(message: Message) -> bool:
    """Composed messages go back to draft to be sent again (True); others become error,
    since their subject generator and template lived only in the dead worker's memory."""
    with transaction.atomic():
        if message.composed_content:
            won = Message.objects.filter(pk=message.pk, status=Message.Status.PREPARING).update(
                status=Message.Status.DRAFT
            )
            return bool(won)
        status_data = with_error(
            message.status_data,
            error_entry("Preparing was interrupted (the worker stopped); send the message again."),
        )
        Message.objects.filter(pk=message.pk, status=Message.Status.PREPARING).update(
            status=Message.Status.ERROR, status_data=status_data
        )
    return False

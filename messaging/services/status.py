"""Status rules: error entries, the receiver failure rule and the message roll-up."""

from __future__ import annotations

import traceback as traceback_module

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from messaging.models import Message, MessageReceiver


def error_entry(error_message: str, exception_traceback: str = "", **extra) -> dict:
    return {
        "error_message": error_message,
        "timestamp": timezone.now().isoformat(),
        "exception_traceback": exception_traceback,
        **extra,
    }


def exception_entry(exc: BaseException) -> dict:
    return error_entry(f"{type(exc).__name__}: {exc}", "".join(traceback_module.format_exception(exc)))


def with_error(status_data: dict, entry: dict) -> dict:
    """status_data with the entry appended to its "errors", other keys kept."""
    return {**status_data, "errors": [*status_data.get("errors", []), entry]}


def resend_limit() -> int:
    return getattr(settings, "MESSAGING_RESEND_LIMIT", 2)


def status_after_failure(failed_count: int) -> str:
    """failed while automatic retries remain, error once they are exhausted."""
    if failed_count <= resend_limit():
        return MessageReceiver.Status.FAILED
    return MessageReceiver.Status.ERROR


def receiver_counts(message_id: int) -> dict[str, int]:
    rows = (
        MessageReceiver.objects.filter(message_id=message_id)
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
    )
    counts = {status: 0 for status in MessageReceiver.Status.values}
    counts.update(dict(rows))
    return counts


def published_counts(message: Message) -> dict[str, int]:
    """Receiver counts as last published on the message, without counting the receivers.

    Every transition (preparing, each finished delivery run, resends, retries) publishes exact
    counts, and delivery workers publish progress every PROGRESS_INTERVAL seconds while
    sending, so a status page polled by many browsers never scans a 100,000-row message.
    """
    summary = message.status_data.get("summary")
    if summary and "receiver_counts" in summary:
        return {status: summary["receiver_counts"].get(status, 0) for status in MessageReceiver.Status.values}
    return receiver_counts(message.pk)


def refresh_message_status(message_id: int) -> str | None:
    """Recompute a sending/sent/error message's status from its receivers.

    sending while any receiver is not_sent; sent when every receiver is sent; else error.
    """
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(
                pk=message_id, status__in=[Message.Status.SENDING, Message.Status.SENT, Message.Status.ERROR]
            )
            .first()
        )
        if message is None:
            return None
        counts = receiver_counts(message_id)
        total = sum(counts.values())
        if counts[MessageReceiver.Status.NOT_SENT]:
            new_status = Message.Status.SENDING
        elif total and counts[MessageReceiver.Status.SENT] == total:
            new_status = Message.Status.SENT
        else:
            new_status = Message.Status.ERROR
        summary = {"receiver_counts": counts, "total": total}
        if new_status != message.status or message.status_data.get("summary") != summary:
            message.status = new_status
            message.status_data = {**message.status_data, "summary": summary}
            message.save(update_fields=["status", "status_data"])
        return new_status

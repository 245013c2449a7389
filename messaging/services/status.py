"""Status rules (pure reads and decisions; the writes are in `transitions`): error entries, the
receiver failure rule, the message roll-up rule and the counts the status page shows."""

from __future__ import annotations

import traceback as traceback_module

from django.db.models import Count
from django.utils import timezone

from messaging import conf
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


def status_after_failure(failed_count: int) -> str:
    """failed while automatic retries remain, error once they are exhausted."""
    if failed_count <= conf.resend_limit():
        return MessageReceiver.Status.FAILED
    return MessageReceiver.Status.ERROR


def status_from_counts(current: str, counts: dict[str, int]) -> str:
    """sending while any receiver is not_sent (blocked stays blocked), sent when every receiver
    is sent, else error (SPEC §2)."""
    total = sum(counts.values())
    if counts[MessageReceiver.Status.NOT_SENT]:
        return Message.Status.BLOCKED if current == Message.Status.BLOCKED else Message.Status.SENDING
    if total and counts[MessageReceiver.Status.SENT] == total:
        return Message.Status.SENT
    return Message.Status.ERROR


def receiver_counts(message_id: int) -> dict[str, int]:
    rows = (
        MessageReceiver.objects.filter(message_id=message_id)
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
    )
    counts = dict.fromkeys(MessageReceiver.Status.values, 0)
    counts.update(dict(rows))
    return counts


def published_counts(message: Message) -> dict[str, int]:
    """Receiver counts as last published on the message, without counting the receivers.

    Every transition (preparing, each finished delivery run, resends, retries) publishes exact
    counts, and delivery workers publish progress every few seconds while sending, so a status
    page polled by many browsers never scans a 100,000-row message.
    """
    summary = message.status_data.get("summary")
    if summary and "receiver_counts" in summary:
        return {status: summary["receiver_counts"].get(status, 0) for status in MessageReceiver.Status.values}
    return receiver_counts(message.pk)

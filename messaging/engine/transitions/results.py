"""A delivery attempt's result on its receiver (written only by the worker that owns it), and
the reset for a resend."""

from __future__ import annotations

from functools import lru_cache

from django.db import connection
from django.utils import timezone

from messaging.engine.channels import DeliveryResult
from messaging.engine.status import (
    error_entry,
    retry_delay,
    status_after_failure,
    with_error,
)
from messaging.models import Message, MessageReceiver

ReceiverStatus = MessageReceiver.Status


def result_fields(receiver: MessageReceiver, result: DeliveryResult) -> dict:
    now = timezone.now()
    # cancel_reason is cleared: a result is what happened, whatever was said before (a direct
    # send() may send a receiver that a cancel had marked).
    fields: dict = {
        "claimed_by": "",
        "lease_expires_datetime": None,
        "in_flight_since": None,
        "cancel_reason": "",
    }
    if result.details.get("provider_message_id"):
        fields["provider_message_id"] = result.details["provider_message_id"][:255]
    if result.delivered:
        return fields | {
            "status": ReceiverStatus.SENT,
            "sending_success_count": receiver.sending_success_count + 1,
            "sent_datetime": now,
            "next_attempt_datetime": None,
            "permanent_failure": False,
        }
    failed_count = receiver.sending_failed_count + 1
    status = status_after_failure(failed_count)
    entry = error_entry(result.reason, result.traceback, code=result.code, permanent=result.permanent)
    retried = status == ReceiverStatus.FAILED and not result.permanent
    if result.details.get("suppressed"):
        fields |= {
            "delivery_outcome": MessageReceiver.Outcome.SUPPRESSED,
            "outcome_datetime": now,
            "outcome_detail": result.reason[:255],
        }
    return fields | {
        "status": status,
        "sending_failed_count": failed_count,
        "status_data": with_error(receiver.status_data, entry),
        "last_error": (result.reason or "")[:255],
        "permanent_failure": result.permanent,
        "next_attempt_datetime": now + retry_delay(failed_count) if retried else None,
    }


def record_result(receiver: MessageReceiver, result: DeliveryResult, worker_id: str) -> str:
    """Store one attempt's outcome in one UPDATE, committed before the worker sends the next
    receiver: that is what bounds a crash to one uncertain receiver. Returns the message's
    status as of this write (a worker stops unless it is still `sending`), or "" (nothing
    written) if the worker does not own the receiver any more."""
    fields = result_fields(receiver, result)
    message_status = _update_owned(receiver.pk, worker_id, fields)
    if not message_status:
        return ""
    for name, value in fields.items():
        setattr(receiver, name, value)
    return message_status


def record_uncertain(receiver: MessageReceiver, reason: str, worker_id: str) -> str:
    """The connection died after the message was handed over and before the server answered:
    it may have been delivered. Not charged; released and flagged, so it is sent again with the
    same Message-ID, exactly like a receiver whose worker died, but not before a growing pause
    (nobody may claim it until then), so a server that keeps dropping after DATA is not flooded.
    Returns like record_result."""
    previous = receiver.status_data.get("delivery_uncertain") or {}
    times = previous.get("times", 0) + 1
    status_data = {
        **receiver.status_data,
        "delivery_uncertain": {
            "timestamp": timezone.now().isoformat(),
            "reason": reason[:1000],
            "times": times,
        },
    }
    fields = {
        "claimed_by": "",
        "lease_expires_datetime": timezone.now() + retry_delay(times),
        "in_flight_since": None,  # the flag in status_data says it from now on
        "status_data": status_data,
    }
    message_status = _update_owned(receiver.pk, worker_id, fields)
    if message_status:
        receiver.status_data = status_data
    return message_status


@lru_cache(maxsize=8)
def _update_sql(vendor: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    receivers, messages = quote(MessageReceiver._meta.db_table), quote(Message._meta.db_table)
    assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
    # RETURNING the message's status: the worker learns of a pause or cancel in the same
    # round trip that records the result (SQLite >= 3.35, PostgreSQL).
    return (
        f"UPDATE {receivers} SET {assignments} "
        f"WHERE {quote('id')} = %s AND {quote('claimed_by')} = %s "
        f"RETURNING (SELECT {messages}.{quote('status')} FROM {messages} "
        f"WHERE {messages}.{quote('id')} = {receivers}.{quote('message_id')})"
    )


def _update_owned(pk: int, worker_id: str, fields: dict) -> str:
    """.filter(pk=pk, claimed_by=worker_id).update(**fields), returning the message's status
    ("" if nothing was updated), with its SQL built once per set of columns: compiling the ORM
    query per receiver was a tenth of the time it took to send one."""
    columns = tuple(fields)
    params = [
        MessageReceiver._meta.get_field(name).get_db_prep_save(fields[name], connection) for name in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(_update_sql(connection.vendor, columns), [*params, pk, worker_id])
        row = cursor.fetchone()
    return row[0] if row else ""


def reset_for_resend(receivers) -> int:
    """failed|error, or sent but bounced → not_sent (a resend or an automatic retry); never
    touches a delivered receiver or one a worker owns. The outcome starts afresh: feedback about
    the earlier attempt that arrives late (older than now) does not apply."""
    return (
        receivers.resendable()
        .filter(claimed_by="")
        .update(
            status=ReceiverStatus.NOT_SENT,
            next_attempt_datetime=None,
            permanent_failure=False,
            lease_expires_datetime=None,
            delivery_outcome="",
            outcome_detail="",
            outcome_datetime=timezone.now(),
        )
    )

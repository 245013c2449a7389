"""Claiming and delivering receivers, and recording each result.

Order per receiver, so that a worker killed at any point loses nothing:
claim (lease, committed) → channel delivers → result recorded (committed) → next receiver.
A claim whose lease ran out without a result was abandoned by a dead worker: its receivers
are claimable again, and the first of them (receivers are sent in id order, each recorded
before the next is sent) is flagged "delivery_uncertain" because the server may have
accepted it just before the worker died.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from messaging import channels
from messaging.channels import ChannelUnavailable, DeliveryResult
from messaging.models import MessageReceiver
from messaging.services.status import error_entry, refresh_message_status, status_after_failure

logger = logging.getLogger(__name__)

CLAIM_BATCH_SIZE = 100
# How often a delivering worker publishes progress counts for the status page, in seconds.
PROGRESS_INTERVAL = 2.0


def lease_seconds() -> int:
    return getattr(settings, "MESSAGING_LEASE_SECONDS", 300)


def retry_delay(failed_count: int) -> timedelta:
    base = getattr(settings, "MESSAGING_RETRY_BASE_SECONDS", 60)
    return timedelta(seconds=base * 2 ** max(failed_count - 1, 0))


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_batch(message_id: int, worker_id: str, limit: int = CLAIM_BATCH_SIZE) -> list:
    """Claim up to `limit` not-sent receivers of a message for this worker.

    PostgreSQL: FOR UPDATE SKIP LOCKED keeps concurrent claimers disjoint. SQLite: the
    IMMEDIATE transaction holds the write lock, so the select and update are one step.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            MessageReceiver.objects.filter(message_id=message_id)
            .claimable(now)
            .select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", "claimed_by")[:limit]
        )
        if not rows:
            return []
        ids = [pk for pk, _claimed_by in rows]
        MessageReceiver.objects.filter(id__in=ids).update(
            claimed_by=worker_id, lease_expires_datetime=now + timedelta(seconds=lease_seconds())
        )
    receivers = list(MessageReceiver.objects.filter(id__in=ids).order_by("id"))
    _flag_abandoned(receivers, dict(rows))
    return receivers


def _flag_abandoned(receivers: list, previous_claims: dict[int, str]) -> None:
    first_of_claim: dict[str, int] = {}
    for receiver in receivers:
        previous = previous_claims.get(receiver.pk)
        if previous and previous not in first_of_claim:
            first_of_claim[previous] = receiver.pk
    for receiver in receivers:
        if receiver.pk in first_of_claim.values():
            receiver.status_data = {
                **receiver.status_data,
                "delivery_uncertain": {
                    "timestamp": timezone.now().isoformat(),
                    "abandoned_by": previous_claims[receiver.pk],
                },
            }
            MessageReceiver.objects.filter(pk=receiver.pk).update(status_data=receiver.status_data)


def record_result(receiver: MessageReceiver, result: DeliveryResult, worker_id: str = "") -> bool:
    """Store one attempt's outcome in one UPDATE, committed before the next receiver is sent:
    that is what bounds a crash to one uncertain receiver. False if another worker owns the
    receiver now (its lease ran out and it was claimed again)."""
    now = timezone.now()
    fields = {"claimed_by": "", "lease_expires_datetime": None}
    if result.delivered:
        fields |= {
            "status": MessageReceiver.Status.SENT,
            "sending_success_count": receiver.sending_success_count + 1,
            "sent_datetime": now,
            "next_attempt_datetime": None,
            "permanent_failure": False,
        }
    else:
        failed_count = receiver.sending_failed_count + 1
        entry = error_entry(result.reason, result.traceback, code=result.code, permanent=result.permanent)
        status_data = {**receiver.status_data, "errors": [*receiver.status_data.get("errors", []), entry]}
        fields |= {
            "status": status_after_failure(failed_count),
            "sending_failed_count": failed_count,
            "status_data": status_data,
            "last_error": (result.reason or "")[:255],
            "permanent_failure": result.permanent,
            "next_attempt_datetime": None if result.permanent else now + retry_delay(failed_count),
        }
    updated = _update_claimed(receiver.pk, worker_id, fields)
    if not updated:
        logger.warning("Receiver %s was claimed by another worker; result not recorded.", receiver.pk)
        return False
    for name, value in fields.items():
        setattr(receiver, name, value)
    return True


@lru_cache(maxsize=8)
def _update_sql(columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
    return (
        f"UPDATE {quote(MessageReceiver._meta.db_table)} SET {assignments} "
        f"WHERE {quote('id')} = %s AND {quote('claimed_by')} = %s"
    )


def _update_claimed(pk: int, worker_id: str, fields: dict) -> int:
    """The same UPDATE as .filter(pk=pk, claimed_by=worker_id).update(**fields), with its SQL
    built once per set of columns: compiling the ORM query on every receiver was a tenth of the
    time it took to send one."""
    columns = tuple(fields)
    params = [
        MessageReceiver._meta.get_field(name).get_db_prep_save(fields[name], connection) for name in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(_update_sql(columns), [*params, pk, worker_id])
        return cursor.rowcount


def deliver_claimed(receivers: list, worker_id: str) -> None:
    by_type: dict[str, list] = {}
    for receiver in receivers:
        by_type.setdefault(receiver.message_type, []).append(receiver)
    for message_type, group in by_type.items():
        try:
            channel = channels.get_channel(message_type)
        except LookupError as exc:
            for receiver in group:
                record_result(
                    receiver, DeliveryResult(delivered=False, permanent=True, reason=str(exc)), worker_id
                )
            continue
        for receiver, result in channel.deliver(group):
            record_result(receiver, result, worker_id)


def release(receivers: list, worker_id: str) -> None:
    MessageReceiver.objects.filter(pk__in=[r.pk for r in receivers], claimed_by=worker_id).update(
        claimed_by="", lease_expires_datetime=None
    )


def deliver_message(message_id: int, *, wait_for_others: bool = False) -> bool:
    """Claim and deliver batches until none is left. False if the channel is unavailable
    (nothing was charged; the caller retries later). With wait_for_others, also waits until
    receivers claimed by other workers are recorded or their leases run out."""
    worker_id = new_worker_id()
    _relax_commit_durability()
    published = time.monotonic()
    while True:
        if time.monotonic() - published >= PROGRESS_INTERVAL:
            refresh_message_status(message_id)
            published = time.monotonic()
        batch = claim_batch(message_id, worker_id)
        if not batch:
            if wait_for_others and _has_unfinished(message_id):
                time.sleep(0.2)
                continue
            break
        try:
            deliver_claimed(batch, worker_id)
        except ChannelUnavailable as exc:
            logger.warning("Message %s: %s", message_id, exc)
            release(batch, worker_id)
            refresh_message_status(message_id)
            return False
    refresh_message_status(message_id)
    return True


def _relax_commit_durability() -> None:
    """On PostgreSQL, don't wait for the WAL flush on each per-receiver commit.

    A killed worker loses nothing by this (the server still writes the WAL); only a crash of
    the database server itself could lose the last fraction of a second of results, and those
    receivers are claimed again and flagged like any abandoned claim.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")


def _has_unfinished(message_id: int) -> bool:
    return MessageReceiver.objects.filter(
        message_id=message_id, status=MessageReceiver.Status.NOT_SENT
    ).exists()


def send_one(receiver: MessageReceiver) -> None:
    """One attempt now, in this process (MessageReceiver.send()). Never raises for a
    delivery failure; a channel that is unreachable counts as a failed attempt here."""
    if receiver.pk is None:
        receiver.save()
    worker_id = new_worker_id()
    MessageReceiver.objects.filter(pk=receiver.pk).update(
        claimed_by=worker_id,
        lease_expires_datetime=timezone.now() + timedelta(seconds=lease_seconds()),
    )
    receiver.claimed_by = worker_id
    try:
        channel = channels.get_channel(receiver.message_type)
        results = list(channel.deliver([receiver]))
        result = results[0][1]
    except ChannelUnavailable as exc:
        result = DeliveryResult(delivered=False, reason=str(exc))
    except LookupError as exc:
        result = DeliveryResult(delivered=False, permanent=True, reason=str(exc))
    record_result(receiver, result, worker_id)
    refresh_message_status(receiver.message_id)

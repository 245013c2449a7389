"""Who owns a receiver: claims in batches, leases and their renewal, release."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from django.db import connection, transaction
from django.db.models import Q, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils import timezone

from messaging import conf
from messaging.models import Message, MessageReceiver

CLAIM_BATCH_SIZE = 100

Status = Message.Status


def lease_seconds() -> int:
    return conf.lease_seconds()


@dataclass
class Claim:
    """Receivers a worker owns, and until when (by this process's monotonic clock, measured
    from before the claim was written, so it never overestimates the lease)."""

    worker_id: str
    receivers: list[MessageReceiver]
    lease_deadline: float
    lost: set[int] = field(default_factory=set)
    # Why the worker stops handing this claim's receivers over (the message's new status).
    halted: str = ""
    # The receiver marked in flight and not yet recorded, if any.
    in_flight: int | None = None

    @property
    def ids(self) -> list[int]:
        return [r.pk for r in self.receivers]

    def seconds_left(self) -> float:
        return self.lease_deadline - time.monotonic()


def lease_from_now(seconds: float) -> CombinedExpression:
    """An expiry `seconds` from now on the database's clock. Leases are written and compared
    there only, so hosts whose clocks disagree still agree on who owns a receiver."""
    return Now() + Value(timedelta(seconds=seconds))


def claim_batch(message_id: int, worker_id: str, limit: int = CLAIM_BATCH_SIZE) -> Claim | None:
    """Claim up to `limit` unowned not-sent receivers of a sending message; the ones a dead
    owner had handed over (in flight, no result) are flagged in the same transaction.

    PostgreSQL: FOR UPDATE SKIP LOCKED keeps concurrent claimers disjoint. SQLite: the
    IMMEDIATE transaction holds the write lock, so the select and update are one step."""
    started = time.monotonic()
    with transaction.atomic():
        rows = list(
            MessageReceiver.objects.filter(message_id=message_id, message__status=Status.SENDING)
            .exclude(message__expires_at__lte=timezone.now())
            .claimable(worker_id)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("id")
            .values_list("id", "claimed_by", "in_flight_since")[:limit]
        )
        if not rows:
            return None
        ids = [pk for pk, _owner, _since in rows]
        flag_uncertain({pk: owner for pk, owner, since in rows if since is not None})  # owner died
        MessageReceiver.objects.filter(id__in=ids).update(
            claimed_by=worker_id, lease_expires_datetime=lease_from_now(lease_seconds())
        )
    receivers = list(MessageReceiver.objects.filter(id__in=ids).order_by("id"))
    return Claim(worker_id, receivers, started + lease_seconds())


def flag_uncertain(previous_owners: dict[int, str], **fields) -> int:
    """Receivers that were handed to the channel and have no result (their owner died, or could
    not record it) may have been delivered: flag them "delivery_uncertain" (a resend goes out
    with the same Message-ID) and clear the mark, with `fields`, in the caller's transaction.
    Each is one UPDATE guarded by the owner and the mark read before (a few rows per dead lane),
    so a worker that recorded its result meanwhile wins. Returns how many were flagged."""
    if not previous_owners:
        return 0
    now = timezone.now().isoformat()
    rows = MessageReceiver.objects.filter(pk__in=list(previous_owners)).values_list("pk", "status_data")
    flagged = 0
    for pk, status_data in rows:
        earlier = status_data.get("delivery_uncertain") or {}
        flag = {**earlier, "timestamp": now, "abandoned_by": previous_owners[pk] or "(released)"}
        flagged += MessageReceiver.objects.filter(
            pk=pk, claimed_by=previous_owners[pk], in_flight_since__isnull=False
        ).update(status_data={**status_data, "delivery_uncertain": flag}, in_flight_since=None, **fields)
    return flagged


def renew_leases(claim: Claim, ids: list[int]) -> set[int]:
    """Extend the lease on `ids` (receivers of the claim not yet recorded); returns those
    still owned. A receiver lost meanwhile (our lease ran out and another worker claimed it)
    is not ours to send any more."""
    started = time.monotonic()
    with transaction.atomic():
        MessageReceiver.objects.filter(id__in=ids, claimed_by=claim.worker_id).update(
            lease_expires_datetime=lease_from_now(lease_seconds())
        )
        kept = set(
            MessageReceiver.objects.filter(id__in=ids, claimed_by=claim.worker_id).values_list(
                "id", flat=True
            )
        )
    claim.lease_deadline = started + lease_seconds()
    claim.lost.update(set(ids) - kept)
    return kept


def claim_one(receiver: MessageReceiver, worker_id: str) -> bool:
    """Own one receiver for a direct send() (any status: send() also resends). False if a
    worker holds a live claim on it (a receiver set aside until a time, unowned, may be sent
    now by hand). The instance is reloaded, so counters are current."""
    with transaction.atomic():
        row = (
            MessageReceiver.objects.filter(pk=receiver.pk)
            .filter(
                Q(claimed_by="")
                | Q(lease_expires_datetime__isnull=True)
                | Q(lease_expires_datetime__lt=Now())
            )
            .select_for_update()
            .values_list("claimed_by", "in_flight_since")
            .first()
        )
        if row is None:
            return False
        owner, since = row
        if since is not None:
            flag_uncertain({receiver.pk: owner})
        MessageReceiver.objects.filter(pk=receiver.pk).update(
            claimed_by=worker_id, lease_expires_datetime=lease_from_now(lease_seconds())
        )
    receiver.refresh_from_db()
    return True


def mark_in_flight(receiver: MessageReceiver, worker_id: str, send_seconds: float) -> str:
    """The last step before a receiver is handed to the channel, committed first: while the
    worker owns it and its lease outlasts one send by the database's clock, mark it in flight.
    Returns the message's status ("sending" to go ahead; paused, cancelled or expired: stop) or
    "" if it is not ours (lost, or the lease would run out mid-send) and must not be sent."""
    marked_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _mark_sql(connection.vendor),
            [marked_at, receiver.pk, worker_id, *_seconds_param(connection.vendor, send_seconds)],
        )
        row = cursor.fetchone()
    if row is None:
        return ""
    if row[0] == Message.Status.SENDING:
        receiver.in_flight_since = marked_at
    return row[0]


def mark_sending_now(receiver: MessageReceiver, worker_id: str) -> bool:
    """mark_in_flight for a direct send() (claim_one), which may resend a receiver of any
    message: marked while the worker owns it, whatever the message's status."""
    marked_at = timezone.now()
    owned = MessageReceiver.objects.filter(pk=receiver.pk, claimed_by=worker_id)
    marked = owned.update(in_flight_since=marked_at)
    if marked:
        receiver.in_flight_since = marked_at
    return bool(marked)


@lru_cache(maxsize=2)
def _mark_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    receivers, messages = quote(MessageReceiver._meta.db_table), quote(Message._meta.db_table)
    later = (
        "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'now', %s)"
        if vendor == "sqlite"
        else "STATEMENT_TIMESTAMP() + make_interval(secs => %s)"
    )
    message_status = (
        f"(SELECT {messages}.{quote('status')} FROM {messages} "
        f"WHERE {messages}.{quote('id')} = {receivers}.{quote('message_id')})"
    )
    # Marked only while the receiver is not sent and its message sending; either way a status
    # comes back, so a worker learns of a pause or cancel in the same round trip, with nothing
    # marked. The receiver's own status is checked too: on PostgreSQL a mark that waited for a
    # cancel's row lock sees the cancelled row, while the subquery still sees the message as
    # it was when the statement began.
    not_sent = f"{quote('status')} = '{MessageReceiver.Status.NOT_SENT}'"
    return (
        f"UPDATE {receivers} SET {quote('in_flight_since')} = CASE WHEN {not_sent} AND {message_status} = "
        f"'{Message.Status.SENDING}' THEN %s ELSE {quote('in_flight_since')} END "
        f"WHERE {quote('id')} = %s AND {quote('claimed_by')} = %s "
        f"AND {quote('lease_expires_datetime')} >= {later} "
        f"RETURNING CASE WHEN {not_sent} THEN {message_status} ELSE '{Message.Status.CANCELLED}' END"
    )


def _seconds_param(vendor: str, seconds: float) -> list:
    return [f"+{seconds:.3f} seconds"] if vendor == "sqlite" else [seconds]


def unmark(pk: int, worker_id: str) -> int:
    """The channel gave up on a receiver before anything of it left (it raised
    ChannelUnavailable: no connection, login or TLS refused): not in flight after all."""
    return MessageReceiver.objects.filter(pk=pk, claimed_by=worker_id).update(in_flight_since=None)


def release(ids: Iterable[int], worker_id: str) -> int:
    """Give receivers back unrecorded (not charged); anyone may claim them at once. One that was
    in flight keeps its mark, so whoever claims it next flags it (claim_batch)."""
    return MessageReceiver.objects.filter(pk__in=list(ids), claimed_by=worker_id).update(
        claimed_by="", lease_expires_datetime=None
    )


def defer(ids: Iterable[int], worker_id: str, until: datetime) -> int:
    """Give receivers back unsent and uncharged, claimable by nobody before `until`: a sending
    limit they need (their domain's) is used up until then. Never handed over, so not in flight.
    Whoever claims them after `until` delivers them (the task queued for then, the sweeper)."""
    return MessageReceiver.objects.filter(pk__in=list(ids), claimed_by=worker_id).update(
        claimed_by="", lease_expires_datetime=until, in_flight_since=None
    )

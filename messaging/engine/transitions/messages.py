"""Message moves: queue, schedule, prepare, block, pause, resume, cancel, expire, and the roll-up
from the receivers' counts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from messaging import conf
from messaging.engine.status import (
    cancelled_counts,
    progress_timeline,
    receiver_counts,
    retry_delay,
    status_from_counts,
    with_error,
)
from messaging.engine.transitions.ownership import flag_uncertain
from messaging.models import Message, MessageReceiver
from messaging.signals import message_status_changed

Status = Message.Status
ReceiverStatus = MessageReceiver.Status
CancelReason = MessageReceiver.CancelReason


def _move(
    message_id: int,
    expected: Iterable[str],
    new_status: str | None,
    change_data: Callable[[dict], dict] = lambda data: data,
    **fields,
) -> dict | None:
    """Move a message from one of `expected` to `new_status` (None: it keeps its status, only
    status_data changes); None if it was not in `expected` (or `change_data` vetoed the move by
    returning None). Returns the new status_data."""
    expected = list(expected)
    with transaction.atomic():
        row = (
            Message.objects.select_for_update()
            .filter(pk=message_id, status__in=expected)
            .values_list("status", "status_data")
            .first()
        )
        if row is None:
            return None
        old_status, old_data = row
        status_data = change_data(dict(old_data))
        if status_data is None:
            return None
        new_status = new_status or old_status
        moved = Message.objects.filter(pk=message_id, status__in=expected).update(
            status=new_status, status_data=status_data, **fields
        )
        if moved:
            _changed(message_id, old_status, new_status, status_data)
    return status_data if moved else None


def _changed(message_id: int, old: str, new: str, status_data: dict) -> None:
    if old != new:
        message_status_changed.send(
            sender=Message, message_id=message_id, old=old, new=new, status_data=status_data
        )


def _apply(message: Message, status: str, status_data: dict | None) -> bool:
    """Mirror a transition on the caller's instance; True if it happened."""
    if status_data is None:
        return False
    message.status = status
    message.status_data = status_data
    return True


def queue(message: Message, user_ids: list[int], expected: Iterable[str] = (Status.DRAFT,)) -> bool:
    """draft → queued, with the recipients frozen to user ids."""
    queued = timezone.now().isoformat()
    data = _move(
        message.pk,
        expected,
        Status.QUEUED,
        lambda d: {**d, "queued_datetime": queued},
        virtual_message_receivers={**message.virtual_message_receivers, "user_ids": user_ids},
    )
    if data is not None:
        message.refresh_from_db(fields=["status", "status_data", "virtual_message_receivers"])
    return data is not None


def schedule(message: Message, send_at, expires_at=None) -> bool:
    """draft|scheduled → scheduled: a staff-composed message waits for `send_at` (rescheduling
    is the same move). Its recipients are resolved when it starts."""
    data = _move(
        message.pk,
        [Status.DRAFT, Status.SCHEDULED],
        Status.SCHEDULED,
        lambda d: d,
        send_at=send_at,
        expires_at=expires_at,
    )
    if data is not None:
        message.send_at, message.expires_at = send_at, expires_at
    return _apply(message, Status.SCHEDULED, data)


def unschedule(message: Message) -> bool:
    """scheduled → draft, only for a message without receivers (a staff-composed one)."""
    if message.receivers.exists():
        return False
    data = _move(message.pk, [Status.SCHEDULED], Status.DRAFT, send_at=None, expires_at=None)
    if data is not None:
        message.send_at = message.expires_at = None
    return _apply(message, Status.DRAFT, data)


def queue_scheduled(message: Message, user_ids: list[int]) -> bool:
    """scheduled → queued once its time has come (a staff-composed message)."""
    if message.send_at is None or message.send_at > timezone.now():
        return False
    return queue(message, user_ids, expected=[Status.SCHEDULED])


def start_scheduled_delivery(message_id: int) -> bool:
    """scheduled → sending once its time has come (prepared earlier through the API)."""
    if not Message.objects.due_to_start().filter(pk=message_id).exists():
        return False
    started = timezone.now().isoformat()
    return (
        _move(message_id, [Status.SCHEDULED], Status.SENDING, lambda d: {**d, "sending_started": started})
        is not None
    )


def unqueue(message: Message) -> bool:
    """queued → draft: the task queue could not take the send."""
    data = _move(
        message.pk,
        [Status.QUEUED],
        Status.DRAFT,
        lambda d: {k: v for k, v in d.items() if k != "queued_datetime"},
    )
    return _apply(message, Status.DRAFT, data)


def start_preparing(message: Message, preparer: str) -> bool:
    """draft|queued → preparing, owned by `preparer` under a lease it renews with every batch of
    receivers it commits (renew_preparation); only that preparer may finish it."""
    now = _database_now(message.pk)
    data = _move(
        message.pk,
        [Status.DRAFT, Status.QUEUED],
        Status.PREPARING,
        lambda d: {
            **d,
            "preparing_started": now.isoformat(),
            "preparing_by": preparer,
            "preparing_until": _preparation_lease_from(now),
        },
        message_type=message.message_type,
    )
    return _apply(message, Status.PREPARING, data)


def renew_preparation(message_id: int, preparer: str) -> bool:
    """preparing (or still preparing while sending: start_streaming) → the same, with a fresh
    lease, while `preparer` still owns the preparation.

    Called first in the transaction that commits each batch, so a preparation that was taken
    over (its lease ran out: take_over_preparation), or whose message was cancelled or expired
    meanwhile, commits nothing more. On PostgreSQL the message row stays locked until that batch
    is committed, so a take-over or a cancel waits for it."""
    until = _preparation_lease_from(_database_now(message_id))
    renewed = _in_preparation(
        message_id, lambda d: {**d, "preparing_until": until} if d.get("preparing_by") == preparer else None
    )
    return renewed is not None


def _in_preparation(message_id: int, change_data: Callable[[dict], dict | None]) -> dict | None:
    """_move keeping the status, of a message whose preparation goes on: `preparing`, or one of
    STREAMING with status_data["still_preparing"]."""
    changed = _move(message_id, [Status.PREPARING], None, change_data)
    if changed is not None:
        return changed
    return _move(
        message_id, Message.STREAMING, None, lambda d: change_data(d) if d.get("still_preparing") else None
    )


def start_streaming(message: Message, preparer: str) -> bool:
    """preparing → sending once the first receivers of a staff-composed send are committed:
    workers deliver them while `preparer` goes on committing the rest under its lease
    (status_data["still_preparing"]). Until finish_streaming the message cannot end: roll_up
    keeps it sending (or paused, blocked) however many of its receivers are done."""
    started = timezone.now().isoformat()
    data = _move(
        message.pk,
        [Status.PREPARING],
        Status.SENDING,
        lambda d: (
            {**d, "still_preparing": True, "sending_started": started}
            if d.get("preparing_by") == preparer
            else None
        ),
    )
    return _apply(message, Status.SENDING, data)


def finish_streaming(message: Message, preparer: str, **summary) -> bool:
    """still preparing → prepared (the status is kept): `preparer` committed its last batch;
    the message ends by its receivers' counts from now on."""
    data = _in_streaming(message.pk, preparer, lambda d: {**_without(d, "still_preparing"), **summary})
    return _refresh(message, data)


def fail_streaming(message: Message, preparer: str, entry: dict) -> bool:
    """still preparing → prepared in part: a streaming preparation raised. Its receivers stay
    (some may be delivered already) and are delivered; the users it did not reach get nothing,
    so the message ends `error` (status_data["preparation_failed"]), with the reason in its
    errors."""
    data = _in_streaming(
        message.pk,
        preparer,
        lambda d: {**with_error(_without(d, "still_preparing"), entry), "preparation_failed": True},
    )
    return _refresh(message, data)


def _in_streaming(message_id: int, preparer: str, change_data: Callable[[dict], dict]) -> dict | None:
    def owned(data: dict) -> dict | None:
        streaming = data.get("still_preparing") and data.get("preparing_by") == preparer
        return change_data(data) if streaming else None

    return _move(message_id, Message.STREAMING, None, owned)


def _without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


def _refresh(message: Message, status_data: dict | None) -> bool:
    """Mirror a transition that kept the status (re-read: it may have changed meanwhile)."""
    if status_data is None:
        return False
    message.refresh_from_db(fields=["status"])
    message.status_data = status_data
    return True


def preparation_lease_ran_out(message: Message) -> bool:
    """Whether the preparation recorded on the instance has let its lease run out, by the
    database's clock (a read, without a lock: take_over_preparation decides under one)."""
    return _preparation_lease_end(message.status_data, message.created_datetime) <= _database_now(message.pk)


def _preparation_lease_end(status_data: dict, created: datetime) -> datetime:
    """When the preparation recorded in `status_data` stops counting as alive: its lease (renewed
    with every batch); one recorded before leases existed, a lease after its start."""
    if until := status_data.get("preparing_until"):
        return datetime.fromisoformat(until)
    started = status_data.get("preparing_started")
    return (datetime.fromisoformat(started) if started else created) + _preparation_lease()


def take_over_preparation(message: Message, preparer: str) -> bool:
    """A preparation (preparing, or still preparing while sending: start_streaming), owned by
    `preparer` now, status kept, once its lease has run out by the
    database's clock (its worker died, or stalled for longer than a lease). The previous
    preparer commits nothing more: its next batch finds the preparation is not its own."""
    now = _database_now(message.pk)

    def take(data: dict) -> dict | None:
        if _preparation_lease_end(data, message.created_datetime) > now:
            return None  # alive: it renewed its lease meanwhile
        return {
            **data,
            "preparing_by": preparer,
            "preparing_until": _preparation_lease_from(now),
            "preparing_taken_over_from": data.get("preparing_by", ""),
        }

    return _refresh(message, _in_preparation(message.pk, take))


def finish_preparing(message: Message, preparer: str, **summary) -> bool:
    """preparing → sending (or scheduled, if its send_at is still ahead), once `preparer` has
    committed its last batch of receivers; never for a preparation taken over from it."""
    now = timezone.now()
    new_status = Status.SCHEDULED if message.send_at and message.send_at > now else Status.SENDING
    started = {} if new_status == Status.SCHEDULED else {"sending_started": now.isoformat()}
    data = _move(
        message.pk,
        [Status.PREPARING],
        new_status,
        lambda d: {**d, **summary, **started} if d.get("preparing_by") == preparer else None,
    )
    return _apply(message, new_status, data)


def fail_preparation(message: Message, preparer: str, entry: dict) -> bool:
    """preparing → error, with the reason appended to status_data["errors"], while `preparer`
    owns the preparation (which discarded its receivers first: a failed one leaves none)."""
    data = _move(
        message.pk,
        [Status.PREPARING],
        Status.ERROR,
        lambda d: with_error(d, entry) if d.get("preparing_by") == preparer else None,
    )
    return _apply(message, Status.ERROR, data)


def fail(message: Message, entry: dict) -> bool:
    """queued → error (its recipients cannot be resolved), with the reason appended to
    status_data["errors"]. A preparation fails through fail_preparation."""
    data = _move(message.pk, [Status.QUEUED], Status.ERROR, lambda d: with_error(d, entry))
    return _apply(message, Status.ERROR, data)


def requeue_preparation(message: Message, preparer: str) -> bool:
    """preparing → queued, by `preparer`, who took the preparation over from a dead worker: a
    staff-composed message is prepared again, keeping the receivers already committed."""
    requeued = {"queued_datetime": timezone.now().isoformat(), "requeued_after_dead_preparation": True}
    data = _move(
        message.pk,
        [Status.PREPARING],
        Status.QUEUED,
        lambda d: {**d, **requeued} if d.get("preparing_by") == preparer else None,
    )
    return _apply(message, Status.QUEUED, data)


def discard_digest_assembly(message_id: int, preparer: str) -> bool:
    """A digest message still being assembled by `preparer` → deleted, with its receivers; the
    held receivers it carried wait for the next digest (their `digest` is set to null). It was
    never sending, so none of its emails went out."""
    with transaction.atomic():
        data = (
            Message.objects.select_for_update()
            .filter(pk=message_id, status=Status.PREPARING, context_type=Message.ContextType.DIGEST)
            .values_list("status_data", flat=True)
            .first()
        )
        if data is None or data.get("preparing_by") != preparer:
            return False
        Message.objects.filter(pk=message_id).delete()
    return True


def _database_now(message_id: int) -> datetime:
    """The database's clock, which preparation leases are written and compared on (as receivers'
    leases are: ownership.lease_from_now), so hosts whose clocks disagree agree on which
    preparation is alive."""
    now = Message.objects.filter(pk=message_id).annotate(now=Now()).values_list("now", flat=True).first()
    return now or timezone.now()


def _preparation_lease() -> timedelta:
    return timedelta(seconds=conf.preparation_lease_seconds())


def _preparation_lease_from(now: datetime) -> str:
    return (now + _preparation_lease()).isoformat()


def block(message_id: int, reason: str, *, until: datetime | None = None) -> dict | None:
    """sending → blocked: the mail server refuses every delivery (login, TLS, down),
    or, with `until`, a sending limit is used up until then ("quota" in the record).
    Nothing is charged to receivers; the sweeper tries again after a growing delay (or at
    `until`). Returns the "blocked" record, or None if the message was not sending."""
    now = timezone.now()

    def change(data: dict) -> dict:
        previous = data.get("blocked") or {}
        if until is not None:
            record = {"quota": True, "attempts": previous.get("attempts", 0), "next_attempt": until}
        else:
            attempts = previous.get("attempts", 0) + 1
            record = {"attempts": attempts, "next_attempt": now + retry_delay(attempts)}
        return {
            **data,
            "blocked": {
                "reason": reason[:1000],
                "since": previous.get("since", now.isoformat()),
                **record,
                "next_attempt": record["next_attempt"].isoformat(),
            },
        }

    # Only from sending: the other lanes and workers of the same run find it blocked already,
    # and must not count their refusals as further attempts (each would double the delay).
    data = _move(message_id, [Status.SENDING], Status.BLOCKED, change)
    return data["blocked"] if data else None


def unblock(message_id: int) -> bool:
    """blocked → sending, to try the mail server again (keeps the "blocked" record's attempt
    count until a delivery run finishes without being blocked)."""
    return _move(message_id, [Status.BLOCKED], Status.SENDING) is not None


def roll_up(message_id: int, *, delivered_unblocked: bool = False) -> str | None:
    """Recompute a delivering message's status from its receivers and publish exact counts.

    `delivered_unblocked`: a delivery run just went through, so a stale "blocked" record is
    dropped. Returns the status, or None if the message is not delivering."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(pk=message_id, status__in=Message.DELIVERING)
            .only("status", "status_data")
            .first()
        )
        if message is None:
            return None
        counts = receiver_counts(message_id)
        new_status = status_from_counts(message.status, counts, message.status_data)
        summary = {"receiver_counts": counts, "total": sum(counts.values())}
        if counts[ReceiverStatus.CANCELLED]:
            summary["cancelled"] = cancelled_counts(message_id)
        status_data = {**message.status_data, "summary": summary}
        if timeline := progress_timeline(status_data, counts):  # the status page's chart
            status_data["timeline"] = timeline
        # A run that went through drops a stale record, unless the message was blocked again
        # meanwhile (by another worker): that record is current.
        if (delivered_unblocked and message.status != Status.BLOCKED) or new_status != Status.BLOCKED:
            status_data.pop("blocked", None)
        if new_status != message.status or status_data != message.status_data:
            Message.objects.filter(pk=message_id, status=message.status).update(
                status=new_status, status_data=status_data
            )
            _changed(message_id, message.status, new_status, status_data)
    return new_status


def recount(message_id: int) -> bool:
    """Publish exact receiver counts again after receivers were deleted (a user deleted, the
    retention task), keeping the status: a finished send's history is not rewritten. False if
    the message has no published counts to correct."""
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(pk=message_id).only("status_data").first()
        if message is None or "summary" not in message.status_data:
            return False
        counts = receiver_counts(message_id)
        summary = {**message.status_data["summary"], "receiver_counts": counts, "total": sum(counts.values())}
        if "cancelled" in summary:
            summary["cancelled"] = cancelled_counts(message_id)
        Message.objects.filter(pk=message_id).update(status_data={**message.status_data, "summary": summary})
    return True


def pause(message_id: int, *, actor_id: int | None = None, tripped: dict | None = None) -> bool:
    """sending|blocked → paused: workers stop claiming its receivers (and a delivering worker
    stops after the receiver in flight). `tripped`: the failure watch's finding, for an
    automatic pause (status.FailureWatch)."""
    record = {
        "since": timezone.now().isoformat(),
        "by": actor_id,
        "automatic": tripped is not None,
        **(tripped or {}),
    }
    return _move(message_id, Message.PAUSABLE, Status.PAUSED, lambda d: {**d, "paused": record}) is not None


def resume(message_id: int) -> bool:
    """paused → sending; delivery continues with the receivers not yet sent."""
    return (
        _move(
            message_id,
            [Status.PAUSED],
            Status.SENDING,
            lambda d: {k: v for k, v in d.items() if k not in ("paused", "blocked")},
        )
        is not None
    )


def cancel(message_id: int, reason: str = MessageReceiver.CancelReason.CANCELLED) -> dict | None:
    """CANCELLABLE → cancelled (reason "cancelled") or EXPIRABLE → expired (reason "expired"),
    and every receiver not yet handed to the server → cancelled, in one transaction. A worker
    that holds a cancelled receiver stops before handing it over (mark_in_flight tells it the
    message's status). A receiver in flight is left to its worker, which records its real
    outcome; one whose worker is dead (lease over) may have been delivered: it is cancelled
    flagged "delivery_uncertain" (settle_stopped does the same once a live lease runs out).
    Returns {"receivers": cancelled, "in_flight_at_most": workers with one in flight}, or None
    if the message was not in a status that allows it."""
    expiring = reason == MessageReceiver.CancelReason.EXPIRED
    new_status = Status.EXPIRED if expiring else Status.CANCELLED
    with transaction.atomic():
        data = _move(
            message_id,
            Message.EXPIRABLE if expiring else Message.CANCELLABLE,
            new_status,
            lambda d: {**d, new_status: timezone.now().isoformat()},
        )
        if data is None:
            return None
        undelivered = MessageReceiver.objects.filter(message_id=message_id).filter(
            Q(status=ReceiverStatus.NOT_SENT)
            | Q(status=ReceiverStatus.FAILED, permanent_failure=False, next_attempt_datetime__isnull=False)
            | Q(status=ReceiverStatus.HELD, digest__isnull=True)
        )
        in_flight = undelivered.filter(in_flight_since__isnull=False)
        workers = in_flight.leased().order_by().values("claimed_by").distinct().count()
        left_over = _cancel_left_over(message_id, reason)
        cancelled = undelivered.filter(in_flight_since__isnull=True).update(
            status=ReceiverStatus.CANCELLED, cancel_reason=reason, next_attempt_datetime=None
        )
        _clear_dead_owners(message_id)
    roll_up(message_id)
    return {"receivers": cancelled + left_over, "in_flight_at_most": workers}


def settle_stopped() -> int:
    """Finish what a cancel or expiry had to leave to live workers, once they are done or gone:
    a receiver still in flight when its lease ran out → cancelled, flagged; one whose attempt
    ended uncertain after the cancel → cancelled, keeping its flag; a cancelled receiver whose
    dead owner never released it → unowned; a failure recorded after the cancel (retries never
    come) → cancelled. Returns the receivers changed (the sweeper runs this)."""
    changed = 0
    stopped = Message.objects.filter(status__in=(Status.CANCELLED, Status.EXPIRED))
    unsettled = MessageReceiver.objects.filter(message__in=stopped)
    message_ids = {  # small sets, each read through an index
        *unsettled.filter(status=ReceiverStatus.NOT_SENT).values_list("message_id", flat=True),
        *unsettled.filter(status=ReceiverStatus.CANCELLED)
        .exclude(claimed_by="")
        .values_list("message_id", flat=True),
        *unsettled.awaiting_retry().values_list("message_id", flat=True),
    }
    for message_id, status in stopped.filter(pk__in=message_ids).values_list("pk", "status"):
        reason = CancelReason.CANCELLED if status == Status.CANCELLED else CancelReason.EXPIRED
        with transaction.atomic():
            changed += _cancel_left_over(message_id, reason)
            changed += (
                MessageReceiver.objects.filter(message_id=message_id)
                .awaiting_retry()
                .update(status=ReceiverStatus.CANCELLED, cancel_reason=reason, next_attempt_datetime=None)
            )
            changed += _clear_dead_owners(message_id)
        roll_up(message_id)
    return changed


def _cancel_left_over(message_id: int, reason: str) -> int:
    """Not-sent receivers of a stopped message that no live worker owns → cancelled; the ones
    a dead worker had in flight flagged, and any earlier flag kept."""
    left_over = MessageReceiver.objects.filter(message_id=message_id, status=ReceiverStatus.NOT_SENT).exclude(
        Q(lease_expires_datetime__gte=Now()) & ~Q(claimed_by="")
    )
    stopped = {
        "status": ReceiverStatus.CANCELLED,
        "cancel_reason": reason,
        "claimed_by": "",
        "lease_expires_datetime": None,
        "next_attempt_datetime": None,
    }
    abandoned = dict(left_over.filter(in_flight_since__isnull=False).values_list("pk", "claimed_by"))
    flagged = flag_uncertain(abandoned, **stopped)
    return flagged + left_over.filter(in_flight_since__isnull=True).update(**stopped)


def _clear_dead_owners(message_id: int) -> int:
    """Cancelled receivers whose owner died before releasing them: nobody owns them now."""
    return (
        MessageReceiver.objects.filter(message_id=message_id, status=ReceiverStatus.CANCELLED)
        .exclude(claimed_by="")
        .exclude(lease_expires_datetime__gte=Now())
        .update(claimed_by="", lease_expires_datetime=None)
    )


def expire(message_id: int) -> dict | None:
    """EXPIRABLE → expired once its expiry has passed (see cancel)."""
    if not Message.objects.past_expiry().filter(pk=message_id).exists():
        return None
    return cancel(message_id, MessageReceiver.CancelReason.EXPIRED)


def mark_reported(message_id: int, event: str) -> bool:
    """Remember that the sender was told about `event`; False if already told (so two workers
    that see the same event send one email)."""
    with transaction.atomic():
        row = (
            Message.objects.select_for_update()
            .filter(pk=message_id)
            .values_list("status_data", flat=True)
            .first()
        )
        if row is None or event in row.get("reported", []):
            return False
        Message.objects.filter(pk=message_id).update(
            status_data={**row, "reported": [*row.get("reported", []), event]}
        )
    return True

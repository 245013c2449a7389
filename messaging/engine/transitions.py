"""The state machine: every status change of a Message or a MessageReceiver, and every change
of who owns a receiver, happens here and nowhere else (tests/test_transitions.py checks that no
other module writes a status).

Each transition is one conditional UPDATE (`WHERE status IN <expected> [AND claimed_by = <me>]`)
whose row count says whether it happened, so two processes racing for the same change cannot
both win. Message transitions that also change `status_data` read it under a row lock
(SELECT ... FOR UPDATE; SQLite's IMMEDIATE transactions serialise writers anyway), so an entry
written by someone else is never lost.

Message:
    draft ─queue→ queued ─start_preparing→ preparing ─finish_preparing→ sending
    draft ─schedule→ scheduled ─(re)schedule→ scheduled ─unschedule→ draft   (staff-composed)
    scheduled ─queue_scheduled→ queued            (its time came; prepared now)
    preparing ─finish_preparing→ scheduled ─start_scheduled_delivery→ sending   (API send_at)
    sending|blocked ─pause→ paused ─resume→ sending
    scheduled|queued|sending|blocked|paused ─cancel→ cancelled    (receivers not yet handed over,
    scheduled|queued|sending|blocked|paused|error ─expire→ expired  or held and not yet in a
                                                                    digest: cancelled, with the reason)
    queued ─unqueue→ draft                      (the task queue could not take it)
    draft|queued ─start_preparing→ preparing    (prepare_and_send from code: draft)
    preparing ─requeue_preparation→ queued      (its worker died; staff-composed: sent again)
    preparing|queued ─fail→ error                (preparing raised, nothing to send, worker died)
    sending ─block→ blocked ─unblock→ sending   (the mail server refuses every delivery, or a
                                                sending limit is used up for a while)
    DELIVERING ─roll_up→ from the receivers' counts (cancelled and expired are kept)

Every message transition sends `messaging.signals.message_status_changed` after it happened.

Receiver (status not_sent → sent | failed | error | cancelled; ownership via claimed_by + lease):
    (new) ─initial_status→ not_sent, or skipped (final: the user turned the type off), or held
    held ─attach_to_digest→ held in a digest (digest = that digest's receiver, not yet sent)
    held in a digest ─settle_digests→ sent once the digest was sent; error if it failed for good;
                                      back to waiting if it was cancelled
    held ─expire_held→ cancelled (expired) when its message's expiry passed first
    not_sent ─claim_batch→ owned by a worker until its lease runs out (renew_leases extends it)
    owned ─record_result→ sent | failed | error  (released)
    owned ─record_uncertain→ not_sent, flagged delivery_uncertain (released)
    owned ─release→ not_sent (unowned)
    failed|error|sent but undelivered ─reset_for_resend→ not_sent (delivery outcome cleared)
    any ─record_outcome→ delivery outcome from feedback (the newest event wins; a complaint stays)
    not_sent|failed awaiting retry|held ─cancel/expire→ cancelled  (a claimed one keeps its owner, whose
                                                   result, if it was in flight, overwrites this)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from django.db import connection, transaction
from django.db.models import F, OuterRef, Q
from django.utils import timezone

from messaging import conf
from messaging.engine.channels import DeliveryResult
from messaging.engine.status import (
    cancelled_counts,
    error_entry,
    progress_timeline,
    receiver_counts,
    status_after_failure,
    status_from_counts,
    with_error,
)
from messaging.models import DeliveryMode, Message, MessageReceiver
from messaging.signals import message_status_changed

CLAIM_BATCH_SIZE = 100

Status = Message.Status
ReceiverStatus = MessageReceiver.Status


# ---------------------------------------------------------------------------------------------
# Message


def _move(
    message_id: int,
    expected: Iterable[str],
    new_status: str,
    change_data: Callable[[dict], dict] = lambda data: data,
    **fields,
) -> dict | None:
    """Move a message from one of `expected` to `new_status`; None if it was not in `expected`
    (or `change_data` vetoed the move by returning None). Returns the new status_data."""
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
    """draft|queued → preparing, owned by `preparer` (only that preparation may finish it)."""
    started = timezone.now().isoformat()
    data = _move(
        message.pk,
        [Status.DRAFT, Status.QUEUED],
        Status.PREPARING,
        lambda d: {**d, "preparing_started": started, "preparing_by": preparer},
        message_type=message.message_type,
    )
    return _apply(message, Status.PREPARING, data)


def lock_preparation(message: Message, preparer: str) -> bool:
    """Inside the preparing transaction: lock the message row while it is this preparer's.

    The lock is the preparation's proof of life: the sweeper recovers only preparations whose
    row it can lock (SKIP LOCKED), so a running one is never recovered however long it takes,
    and a dead worker's lock goes with its connection."""
    assert connection.in_atomic_block, "lock_preparation must run inside the preparing transaction"
    return (
        Message.objects.select_for_update()
        .filter(pk=message.pk, status=Status.PREPARING, status_data__preparing_by=preparer)
        .exists()
    )


def finish_preparing(message: Message, preparer: str, **summary) -> bool:
    """preparing → sending (or scheduled, if its send_at is still ahead), in the same
    transaction that created the receivers."""
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


def fail(message: Message, entry: dict, expected: Iterable[str] = (Status.PREPARING,)) -> bool:
    """preparing (or queued) → error, with the reason appended to status_data["errors"]."""
    data = _move(message.pk, expected, Status.ERROR, lambda d: with_error(d, entry))
    return _apply(message, Status.ERROR, data)


def requeue_preparation(message: Message) -> bool:
    """preparing → queued: its worker died; a staff-composed message is prepared again."""
    data = _move(
        message.pk,
        [Status.PREPARING],
        Status.QUEUED,
        lambda d: {
            **d,
            "queued_datetime": timezone.now().isoformat(),
            "requeued_after_dead_preparation": True,
        },
    )
    return _apply(message, Status.QUEUED, data)


def adopt_prepared(message_id: int) -> bool:
    """preparing → sending for a message whose receivers were committed without the status
    change (written by a version before both went into one transaction)."""
    return _move(message_id, [Status.PREPARING], Status.SENDING) is not None


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
        new_status = status_from_counts(message.status, counts)
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
    that holds a cancelled receiver stops before handing it over (record_result tells it the
    message's status); the one in flight (at most one per worker) is recorded with its real
    outcome. Returns {"receivers": cancelled, "in_flight_at_most": workers holding some}, or
    None if the message was not in a status that allows it."""
    expiring = reason == MessageReceiver.CancelReason.EXPIRED
    new_status = Status.EXPIRED if expiring else Status.CANCELLED
    now = timezone.now()
    with transaction.atomic():
        data = _move(
            message_id,
            Message.EXPIRABLE if expiring else Message.CANCELLABLE,
            new_status,
            lambda d: {**d, new_status: now.isoformat()},
        )
        if data is None:
            return None
        undelivered = MessageReceiver.objects.filter(message_id=message_id).filter(
            Q(status=ReceiverStatus.NOT_SENT)
            | Q(status=ReceiverStatus.FAILED, permanent_failure=False, next_attempt_datetime__isnull=False)
            | Q(status=ReceiverStatus.HELD, digest__isnull=True)
        )
        workers = (
            undelivered.leased(now).exclude(claimed_by="").order_by().values("claimed_by").distinct().count()
        )
        cancelled = undelivered.update(
            status=ReceiverStatus.CANCELLED, cancel_reason=reason, next_attempt_datetime=None
        )
    roll_up(message_id)
    return {"receivers": cancelled, "in_flight_at_most": workers}


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


# ---------------------------------------------------------------------------------------------
# Receivers: ownership


def lease_seconds() -> int:
    return conf.lease_seconds()


def retry_delay(failed_count: int) -> timedelta:
    seconds = conf.retry_base_seconds() * 2 ** max(failed_count - 1, 0)
    return timedelta(seconds=min(seconds, conf.retry_max_seconds()))


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

    @property
    def ids(self) -> list[int]:
        return [r.pk for r in self.receivers]

    def seconds_left(self) -> float:
        return self.lease_deadline - time.monotonic()


def claim_batch(message_id: int, worker_id: str, limit: int = CLAIM_BATCH_SIZE) -> Claim | None:
    """Claim up to `limit` unowned not-sent receivers of a sending message.

    PostgreSQL: FOR UPDATE SKIP LOCKED keeps concurrent claimers disjoint. SQLite: the
    IMMEDIATE transaction holds the write lock, so the select and update are one step."""
    started = time.monotonic()
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            MessageReceiver.objects.filter(message_id=message_id, message__status=Status.SENDING)
            .exclude(message__expires_at__lte=now)
            .claimable(now)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("id")
            .values_list("id", "claimed_by")[:limit]
        )
        if not rows:
            return None
        ids = [pk for pk, _previous in rows]
        MessageReceiver.objects.filter(id__in=ids).update(
            claimed_by=worker_id, lease_expires_datetime=now + timedelta(seconds=lease_seconds())
        )
    receivers = list(MessageReceiver.objects.filter(id__in=ids).order_by("id"))
    _flag_abandoned(receivers, dict(rows))
    return Claim(worker_id, receivers, started + lease_seconds())


def _flag_abandoned(receivers: list[MessageReceiver], previous_claims: dict[int, str]) -> None:
    """The first receiver of each abandoned claim may have been handed to the server just
    before its worker died (each claim is sent in id order, each result recorded before the
    next send), so it is flagged: it will be sent again with the same Message-ID."""
    flagged: set[str] = set()
    for receiver in receivers:
        previous = previous_claims.get(receiver.pk)
        if not previous or previous in flagged:
            continue
        flagged.add(previous)
        receiver.status_data = {
            **receiver.status_data,
            "delivery_uncertain": {"timestamp": timezone.now().isoformat(), "abandoned_by": previous},
        }
        MessageReceiver.objects.filter(pk=receiver.pk, claimed_by=receiver.claimed_by).update(
            status_data=receiver.status_data
        )


def renew_leases(claim: Claim, ids: list[int]) -> set[int]:
    """Extend the lease on `ids` (receivers of the claim not yet recorded); returns those
    still owned. A receiver lost meanwhile (our lease ran out and another worker claimed it)
    is not ours to send any more."""
    started = time.monotonic()
    expires = timezone.now() + timedelta(seconds=lease_seconds())
    with transaction.atomic():
        MessageReceiver.objects.filter(id__in=ids, claimed_by=claim.worker_id).update(
            lease_expires_datetime=expires
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
    worker holds a live claim on it. The instance is reloaded, so counters are current."""
    now = timezone.now()
    owned = (
        MessageReceiver.objects.filter(pk=receiver.pk)
        .filter(Q(lease_expires_datetime__isnull=True) | Q(lease_expires_datetime__lt=now))
        .update(claimed_by=worker_id, lease_expires_datetime=now + timedelta(seconds=lease_seconds()))
    )
    if owned:
        receiver.refresh_from_db()
    return bool(owned)


def release(ids: Iterable[int], worker_id: str) -> int:
    """Give receivers back unrecorded (not charged); anyone may claim them at once."""
    return MessageReceiver.objects.filter(pk__in=list(ids), claimed_by=worker_id).update(
        claimed_by="", lease_expires_datetime=None
    )


# ---------------------------------------------------------------------------------------------
# Receivers: results


def result_fields(receiver: MessageReceiver, result: DeliveryResult) -> dict:
    now = timezone.now()
    # cancel_reason is cleared: a receiver in flight when its message was cancelled was marked
    # cancelled, and its real outcome replaces that mark.
    fields: dict = {"claimed_by": "", "lease_expires_datetime": None, "cancel_reason": ""}
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


# ---------------------------------------------------------------------------------------------
# Receivers: preferences and digests


def initial_status(mode: str) -> str:
    """The status a new receiver starts in for its user's delivery mode."""
    if mode == DeliveryMode.OFF:
        return ReceiverStatus.SKIPPED
    if mode in (DeliveryMode.DAILY, DeliveryMode.WEEKLY):
        return ReceiverStatus.HELD
    return ReceiverStatus.NOT_SENT


def attach_to_digest(held_ids: Iterable[int], digest_receiver_id: int) -> int:
    """Held receivers not yet in a digest → in this one; the count says how many were still free
    (the caller holds them locked, so all of them)."""
    return MessageReceiver.objects.filter(
        pk__in=list(held_ids), status=ReceiverStatus.HELD, digest__isnull=True
    ).update(digest_id=digest_receiver_id)


def settle_digests() -> set[int]:
    """Held receivers whose digest was sent → sent (at the digest's time); whose digest failed
    for good (error, or a permanent failure such as no address) → error with its reason, so
    the status page shows them undelivered and staff can resend them one by one; whose digest
    was cancelled → waiting for the next one. Returns the ids of the messages whose counts
    changed, rolled up."""
    held = MessageReceiver.objects.filter(status=ReceiverStatus.HELD, digest__isnull=False)
    digest = MessageReceiver.objects.filter(pk=OuterRef("digest_id"))
    sent = held.filter(digest__status=ReceiverStatus.SENT)
    failed = held.filter(
        Q(digest__status=ReceiverStatus.ERROR)
        | Q(digest__status=ReceiverStatus.FAILED, digest__permanent_failure=True)
    )
    with transaction.atomic():
        message_ids = {
            *sent.values_list("message_id", flat=True),
            *failed.values_list("message_id", flat=True),
        }
        sent.update(
            status=ReceiverStatus.SENT,
            sent_datetime=digest.values("sent_datetime")[:1],
            sending_success_count=F("sending_success_count") + 1,
            next_attempt_datetime=None,
        )
        failed.update(
            status=ReceiverStatus.ERROR,
            last_error=digest.values("last_error")[:1],
            permanent_failure=digest.values("permanent_failure")[:1],
            next_attempt_datetime=None,
        )
        held.filter(digest__status=ReceiverStatus.CANCELLED).update(digest=None)
    for message_id in message_ids:
        roll_up(message_id)
    return message_ids


def expire_held(now: datetime | None = None) -> set[int]:
    """Held receivers not yet in a digest whose message's expiry passed → cancelled (expired):
    nothing is delivered after a message's expiry, in a digest neither."""
    now = now or timezone.now()
    expired = MessageReceiver.objects.filter(
        status=ReceiverStatus.HELD, digest__isnull=True, message__expires_at__lte=now
    )
    with transaction.atomic():
        message_ids = set(expired.values_list("message_id", flat=True).distinct())
        MessageReceiver.objects.filter(pk__in=expired.values("pk")).update(
            status=ReceiverStatus.CANCELLED,
            cancel_reason=MessageReceiver.CancelReason.EXPIRED,
            next_attempt_datetime=None,
        )
    for message_id in message_ids:
        roll_up(message_id)
    return message_ids


# ---------------------------------------------------------------------------------------------
# Receivers: delivery feedback


def record_outcome(receiver_id: int, outcome: str, occurred: datetime, detail: str = "") -> bool:
    """What the provider or the recipient's server reported about a sent email. Reports come
    out of order and repeat, so the newest event wins (an older one changes nothing), except
    that a complaint stays: nothing later makes it wanted. True if the outcome changed."""
    return bool(
        MessageReceiver.objects.filter(pk=receiver_id)
        .filter(Q(outcome_datetime__isnull=True) | Q(outcome_datetime__lte=occurred))
        .exclude(delivery_outcome=MessageReceiver.Outcome.COMPLAINED)
        .update(delivery_outcome=outcome, outcome_datetime=occurred, outcome_detail=detail[:255])
    )

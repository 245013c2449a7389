"""Delivering receivers: claim → mark in flight → hand to the channel → record → next.

Order per receiver, so that a worker killed at any point loses nothing and sends nothing twice
unflagged: the claim (with its lease) is committed; a receiver is handed to the channel only if
the lease outlasts the longest that one send can take (`Channel.seconds_per_receiver`), renewing
it first when needed, and only after `mark_in_flight` committed that it is about to go (the mark
checks ownership and the lease on the database's clock, and says whether the message was paused
or cancelled meanwhile); its result, which clears the mark, is committed before the channel takes
the next one. Whoever takes over a receiver that is still marked (its worker died, or could not
record the result) flags it "delivery_uncertain": the receivers that may have reached the
server (a channel that gives up before anything left, ChannelUnavailable, unmarks its receiver).
On PostgreSQL every commit is durable (no relaxed synchronous_commit).

A worker delivers over several lanes at once (MESSAGING_SMTP_CONNECTIONS), each a thread with its
own SMTP session, database connection, worker id and claims, running exactly that loop: so a
crash leaves at most one receiver in flight per lane. Before each send a lane takes a slot from
the sending limits (messaging.engine.rate_limits). A database that is briefly unavailable is
waited for (messaging.engine.outages), so results are recorded, not dropped.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, connections
from django.utils import timezone

from messaging import conf
from messaging.engine import (
    channels,
    controlling,
    queue,
    rate_limits,
    transitions,
    worker_shutdown,
)
from messaging.engine.channels import ChannelUnavailable, DeliveryResult
from messaging.engine.lane_sizing import LaneSizer
from messaging.engine.outages import persistently
from messaging.engine.outgoing import deliver_now, prepared
from messaging.engine.status import FailureWatch
from messaging.engine.transitions import Claim
from messaging.feedback import suppressions
from messaging.models import Message, MessageReceiver

logger = logging.getLogger(__name__)

# How often a delivering worker publishes progress counts for the status page, in seconds.
PROGRESS_INTERVAL = 2.0
# Receivers per claim when a worker delivers over several lanes: small enough that a send of a
# few hundred keeps every lane busy, large enough that claiming stays a small share of the work.
LANE_CLAIM_SIZE = 20


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseTooShort(Exception):
    """Even a fresh lease would run out during one send (the system check reports this)."""


def safety_margin() -> float:
    """Time kept in hand on a lease beyond one send: recording the result, clock drift."""
    return max(1.0, conf.lease_seconds() / 20)


@dataclass
class DeliveryRun:
    """One worker's delivery of one message, shared by its lanes: the expiry (read once), the
    failure watch, and when progress was last published."""

    message_id: int
    expires_at: datetime | None
    watch: FailureWatch
    lock: threading.Lock = field(default_factory=threading.Lock)
    published: float = field(default_factory=time.monotonic)
    lane_cap: int = 1_000_000  # lanes with a higher index stop after their current claim
    digest: bool = False  # a digest's held receivers are settled when its run ends
    sizer: LaneSizer | None = None  # with several lanes: how many
    working: set[int] = field(default_factory=set)  # indexes of the lanes delivering now

    @classmethod
    def start(cls, message_id: int) -> DeliveryRun:
        expires_at, context_type = Message.objects.filter(pk=message_id).values_list(
            "expires_at", "context_type"
        ).first() or (None, "")
        return cls(
            message_id,
            expires_at,
            FailureWatch.from_settings(),
            digest=context_type == Message.ContextType.DIGEST,
        )

    def expired(self) -> bool:
        return self.expires_at is not None and timezone.now() >= self.expires_at

    def count_attempt(self, delivered: bool, reason: str) -> dict | None:
        with self.lock:
            return self.watch.add(delivered, reason)

    def join(self, index: int) -> int:
        with self.lock:
            self.working.add(index)
        return index

    def leave(self, index: int) -> int:
        """Lane `index` stops delivering; returns how many others still do."""
        with self.lock:
            self.working.discard(index)
            return len(self.working)

    def refused_session(self, index: int) -> bool:
        """The channel was unavailable to lane `index`. True if other lanes are delivering:
        then the relay refused one more session, not every session, and this lane retires
        (the lanes are capped at those working). False for the last lane: the channel is down."""
        others = self.leave(index)
        if others and self.sizer is not None:
            self.sizer.refused(others)
            self.lane_cap = min(self.lane_cap, others)
        return bool(others)

    def progress_due(self) -> bool:
        """True for one lane every PROGRESS_INTERVAL: that lane publishes the counts."""
        with self.lock:
            if time.monotonic() - self.published < PROGRESS_INTERVAL:
                return False
            self.published = time.monotonic()
            return True


class Lane(enum.Enum):
    """How one lane's delivery loop ended."""

    DONE = "done"  # nothing left to claim, or retired (LaneSizer)
    STOPPED = "stopped"  # blocked, paused, cancelled, expired, or the lease cannot cover a send
    SHUTDOWN = "shutdown"  # the worker is stopping


def lane_count() -> int:
    """Lanes (each its own SMTP session, database connection and claims) for one delivery:
    MESSAGING_SMTP_CONNECTIONS within MESSAGING_DB_CONNECTIONS_PER_WORKER (conf.delivery_lanes).
    One when the caller is inside a transaction: other threads could not see its receivers."""
    return 1 if connection.in_atomic_block else conf.delivery_lanes()


def deliver_message(message_id: int, *, wait_for_others: bool = False) -> bool:
    """Claim and deliver batches until none is left, over `lane_count()` concurrent lanes.
    False if the channel was unavailable (the message is then "delivery blocked", nothing
    charged), the message was paused, cancelled or expired, or the worker is stopping. With
    wait_for_others, also waits while other workers hold live claims on its receivers."""
    run = DeliveryRun.start(message_id)
    lanes = lane_count()
    if lanes == 1:
        outcomes = [_deliver_lane(run, wait_for_others, transitions.CLAIM_BATCH_SIZE)]
    else:
        outcomes = _run_lanes(run, lanes, wait_for_others)
    if Lane.SHUTDOWN in outcomes:
        _hand_over(message_id)
        return False
    if Lane.STOPPED in outcomes:
        return False
    transitions.roll_up(message_id, delivered_unblocked=True)
    schedule_retries(message_id)
    if run.digest:
        transitions.settle_digests()
    return True


def _run_lanes(run: DeliveryRun, most: int, wait_for_others: bool) -> list[Lane]:
    """Each lane in its own thread (the time goes into waiting for the mail server, so the GIL
    is free meanwhile); its own worker id keeps its claims, and so its one receiver in flight,
    apart from the other lanes'. How many run is LaneSizer's choice (messaging.engine.lane_sizing).
    A lane that raised re-raises here once all have ended."""

    def lane(index: int) -> Lane:
        try:
            return _deliver_lane(run, wait_for_others, LANE_CLAIM_SIZE, index)
        finally:
            run.leave(index)
            connections.close_all()  # this thread's own; the next delivery opens fresh ones

    sizer = run.sizer = LaneSizer.start(_lane_key(run.message_id), most)
    with ThreadPoolExecutor(max_workers=most, thread_name_prefix=f"deliver-{run.message_id}") as pool:
        futures = [pool.submit(lane, run.join(index)) for index in range(sizer.lanes)]
        if len(futures) > 1:  # as remembered from the last send to this relay
            logger.info("Message %s: delivering over %s lanes.", run.message_id, len(futures))
        while wait(futures, timeout=sizer.next_look()).not_done:
            wanted = sizer.wanted()
            run.lane_cap = wanted
            if wanted > len(futures):
                logger.info("Message %s: delivering over %s lanes.", run.message_id, wanted)
                futures += [pool.submit(lane, run.join(index)) for index in range(len(futures), wanted)]
    return [future.result() for future in futures]


def _lane_key(message_id: int) -> str:
    """Whose lane count a delivery remembers: its message types' channels (one relay each)."""
    types = Message.objects.filter(pk=message_id).values_list("message_type", flat=True).first()
    return ",".join(sorted(types or ["email"]))  # none is email (Message.clean_message_type)


def _deliver_lane(run: DeliveryRun, wait_for_others: bool, claim_size: int, index: int = 0) -> Lane:
    worker_id = new_worker_id()
    message_id = run.message_id
    while not worker_shutdown.requested():
        if index >= run.lane_cap:
            return Lane.DONE  # retired: the other lanes deliver the rest
        if run.progress_due():
            persistently(lambda: transitions.roll_up(message_id), "Publishing progress")
        if run.expired():
            controlling.expire(message_id)
            return Lane.STOPPED
        claim = persistently(
            lambda: transitions.claim_batch(message_id, worker_id, claim_size), "Claiming receivers"
        )
        if claim is None:
            if (wait_for_others and _others_in_flight(message_id)) or _being_prepared(message_id):
                time.sleep(0.2)
                continue
            # Nothing to claim: all delivered, or the message is on hold (blocked by another lane
            # or worker, paused), and then its record is not this run's to settle.
            return Lane.STOPPED if _on_hold(message_id) else Lane.DONE
        try:
            deliver_claim(claim, run)
        except ChannelUnavailable as exc:
            if run.refused_session(index):
                logger.info("Message %s: lane %s retires: %s", message_id, index, exc)
                return Lane.DONE
            _block(message_id, str(exc))
            return Lane.STOPPED
        except rate_limits.QuotaSpent as exc:
            _wait_for_quota(message_id, exc)
            return Lane.STOPPED
        except LeaseTooShort as exc:
            logger.error("Message %s: nothing sent: %s", message_id, exc)
            return Lane.STOPPED
        if claim.halted:
            logger.info("Message %s is %s; this worker stops delivering it.", message_id, claim.halted)
            # Expiring rolls the counts up itself; otherwise publish what this worker recorded.
            if not (claim.halted == Message.Status.EXPIRED and controlling.expire(message_id)):
                transitions.roll_up(message_id)
            return Lane.STOPPED
    return Lane.SHUTDOWN


def deliver_claim(claim: Claim, run: DeliveryRun) -> None:
    """Deliver a claim's receivers, each under a live lease, each result recorded before the
    channel takes the next. What is not delivered (stopping, lease lost, message paused,
    cancelled or expired) is released."""
    by_type: dict[str, list] = {}
    for receiver in claim.receivers:
        by_type.setdefault(receiver.message_type, []).append(receiver)
    try:
        for message_type, group in by_type.items():
            try:
                channel = channels.get_channel(message_type)
            except LookupError as exc:
                failure = DeliveryResult(delivered=False, permanent=True, reason=str(exc))
                for receiver in group:
                    record(receiver, failure, claim.worker_id)
                continue
            group = _skip_suppressed(claim, group)
            budget = channel.seconds_per_receiver() + safety_margin()
            limiter = rate_limits.Limiter.for_channel(channel, hold_seconds=budget)
            # Each receiver is prepared as the channel takes it; one that cannot be sent (its
            # message's attachment is unreadable) is recorded without reaching the channel.
            items = prepared(
                _under_lease(claim, run, group, budget, limiter),
                unsendable=lambda receiver, result: _record_and_watch(claim, run, receiver, result),
            )
            try:
                for item, result in channel.deliver(items):
                    _record_and_watch(claim, run, item.ref, result)
            except ChannelUnavailable:
                # Raised before anything of the receiver left (the channel's contract), so it is
                # not in flight after all: no flag for it when it is claimed again.
                if claim.in_flight is not None:
                    persistently(lambda: transitions.unmark(claim.in_flight, claim.worker_id), "Unmarking")
                raise
    finally:
        # Everything recorded has claimed_by cleared, so this releases only what was not sent
        # (one in flight stays marked, so its next claimer flags it).
        persistently(lambda: transitions.release(claim.ids, claim.worker_id), "Releasing receivers")


def suppressed_result(suppression) -> DeliveryResult:
    """A receiver whose address is suppressed: a permanent failure saying why, never sent."""
    return DeliveryResult(
        delivered=False, permanent=True, reason=suppression.describe(), details={"suppressed": True}
    )


def _skip_suppressed(claim: Claim, receivers: list[MessageReceiver]) -> list[MessageReceiver]:
    """Record receivers whose address is suppressed (one query per claim) and return the rest.
    Not counted by the failure watch: staff knew of these addresses, a pause would not help."""
    suppressed = suppressions.suppressions_for(r.send_to for r in receivers)
    if not suppressed:
        return receivers
    rest = []
    for receiver in receivers:
        suppression = suppressed.get(suppressions.normalise(receiver.send_to))
        if suppression is None:
            rest.append(receiver)
            continue
        message_status = record(receiver, suppressed_result(suppression), claim.worker_id)
        if message_status and message_status != Message.Status.SENDING:
            claim.halted = message_status
            return []
    return rest


def _record_and_watch(
    claim: Claim, run: DeliveryRun, receiver: MessageReceiver, result: DeliveryResult
) -> None:
    message_status = record(receiver, result, claim.worker_id)
    claim.in_flight = None
    if run.sizer is not None:
        run.sizer.observe()
    if message_status and message_status != Message.Status.SENDING:
        claim.halted = message_status  # paused, cancelled or expired meanwhile
        return
    if result.uncertain:
        return
    tripped = run.count_attempt(result.delivered, result.reason)
    if tripped and controlling.auto_pause(run.message_id, tripped):
        logger.warning("Message %s paused itself: %s", run.message_id, tripped)
        claim.halted = Message.Status.PAUSED


def _under_lease(
    claim: Claim, run: DeliveryRun, receivers: list, budget: float, limiter: rate_limits.Limiter
) -> Iterator[MessageReceiver]:
    """Yield each receiver only once the rate limits grant it a slot and while this worker's
    lease on it outlasts one send; renew the lease first when it would not; skip receivers lost
    meanwhile; stop when the worker stops, the message stopped being `sending` or its expiry
    passed. A slot counts against the limits until a window after the send's result came.
    When a recipient domain's limit is used up for longer than a lane sleeps, the claim's
    receivers to that domain wait until it frees (_defer_for_quota); the rest go on."""
    deferred: set[int] = set()
    for index, receiver in enumerate(receivers):
        if receiver.pk in deferred:
            continue
        try:
            slot = limiter.acquire(receiver.send_to, stop=lambda: _should_stop(claim, run))
        except rate_limits.QuotaSpent as spent:
            if not spent.rule.domain:
                raise  # the mailer's own limit: nothing else may go either; the message waits
            deferred |= _defer_for_quota(claim, run, receivers[index:], spent)
            continue
        if slot is None:
            return
        try:
            if claim.seconds_left() < budget:
                _renew(claim, [r.pk for r in receivers[index:] if r.pk not in claim.lost], budget)
            message_status = "" if receiver.pk in claim.lost else _mark_in_flight(claim, receiver, budget)
            if not message_status:
                logger.warning(
                    "Receiver %s is no longer this worker's (lease lost); not sending it.", receiver.pk
                )
                continue
            if message_status != Message.Status.SENDING:
                claim.halted = message_status  # paused, cancelled or expired meanwhile: not marked
                return
            claim.in_flight = receiver.pk
            yield receiver
        finally:
            # Runs when the channel asks for the next item (this one's result is recorded, or
            # it was recorded unsendable without reaching the channel) or stops asking.
            slot.release()


def _renew(claim: Claim, ids: list[int], budget: float) -> None:
    persistently(lambda: transitions.renew_leases(claim, ids), "Renewing leases")
    if claim.seconds_left() < budget:
        lease = conf.lease_seconds()
        raise LeaseTooShort(f"MESSAGING_LEASE_SECONDS ({lease}) cannot cover one send ({budget:.0f} s).")


def _mark_in_flight(claim: Claim, receiver: MessageReceiver, budget: float) -> str:
    """The message's status once `receiver` is marked in flight, or "" if it is not ours to
    send. A lease that this host's clock thought long enough but the database's does not (the
    clocks differ) is renewed once on the database's clock and the mark tried again."""

    def mark() -> str:
        return transitions.mark_in_flight(receiver, claim.worker_id, budget)

    message_status = persistently(mark, "Marking a receiver in flight")
    if not message_status and receiver.pk in persistently(
        lambda: transitions.renew_leases(claim, [receiver.pk]), "Renewing a lease"
    ):
        message_status = persistently(mark, "Marking a receiver in flight")
    if not message_status:
        claim.lost.add(receiver.pk)
    return message_status


def _should_stop(claim: Claim, run: DeliveryRun) -> bool:
    if worker_shutdown.requested() or claim.halted:
        return True
    if run.expired():
        claim.halted = Message.Status.EXPIRED
        return True
    return False


def record(receiver: MessageReceiver, result: DeliveryResult, worker_id: str) -> str:
    """Record one attempt; returns the message's status, or "" if the receiver was not ours."""
    if result.uncertain:
        message_status = persistently(
            lambda: transitions.record_uncertain(receiver, result.reason, worker_id), "Recording a result"
        )
    else:
        message_status = persistently(
            lambda: transitions.record_result(receiver, result, worker_id), "Recording a result"
        )
    if not message_status:
        logger.warning("Receiver %s is no longer ours; its result was not recorded.", receiver.pk)
    return message_status


def _block(message_id: int, reason: str, until: datetime | None = None) -> None:
    if until is None:
        logger.warning("Message %s: delivery blocked: %s", message_id, reason)
    blocked = transitions.block(message_id, reason, until=until)
    if blocked:
        eta = datetime.fromisoformat(blocked["next_attempt"])
        # robust: the sweeper retries blocked messages too, should the queue be unreachable.
        queue.after_commit(queue.retry_blocked_message_at, message_id, eta)
    transitions.roll_up(message_id)


def _wait_for_quota(message_id: int, spent: rate_limits.QuotaSpent) -> None:
    """The mailer's own sending limit is used up for longer than a worker should sleep: the
    message waits (shown as blocked, with the time it resumes) and is taken up again then. (A
    recipient domain's limit defers only the receivers to that domain: _defer_for_quota.)"""
    logger.info("Message %s: %s", message_id, spent)
    _block(message_id, str(spent), until=spent.until)


def _defer_for_quota(
    claim: Claim, run: DeliveryRun, receivers: list[MessageReceiver], spent: rate_limits.QuotaSpent
) -> set[int]:
    """A recipient domain's sending limit is used up for longer than a lane should sleep: the
    claim's receivers to that domain are given back, unclaimable until it frees (not sent, not
    charged), and the lane goes on with the others. A delivery is queued for that time; should
    the task be lost, the sweeper finds them claimable then. Returns the deferred ids."""
    ids = {receiver.pk for receiver in receivers if spent.rule.limits(receiver.send_to)}
    deferred = persistently(lambda: transitions.defer(ids, claim.worker_id, spent.until), "Deferring")
    logger.info("Message %s: %s receiver(s) wait: %s", run.message_id, deferred, spent)
    with _resumes_lock:
        now = timezone.now()
        _resumes_queued.difference_update({resume for resume in _resumes_queued if resume[1] < now})
        first = (run.message_id, spent.until) not in _resumes_queued
        _resumes_queued.add((run.message_id, spent.until))
    if first:  # every later claim of the message meets the same spent limit: one task will do
        # A second late: they are claimable once their lease (`until`) is in the past.
        queue.after_commit(queue.deliver_message_at, run.message_id, spent.until + timedelta(seconds=1))
    return ids


# (message id, time) of the deliveries this process queued for when a domain's limit frees.
_resumes_queued: set[tuple[int, datetime]] = set()
_resumes_lock = threading.Lock()


def _hand_over(message_id: int) -> None:
    """This worker is stopping: queue the rest for another consumer (its claims are released)."""
    transitions.roll_up(message_id)
    queue.after_commit(queue.deliver_message, message_id)


def schedule_retries(message_id: int) -> None:
    """Queue the message's next automatic retry for when its backoff ends (the sweeper is
    only the safety net)."""
    due = (
        MessageReceiver.objects.filter(message_id=message_id)
        .awaiting_retry()
        .order_by("next_attempt_datetime")
        .values_list("next_attempt_datetime", flat=True)
        .first()
    )
    if due is not None:
        queue.after_commit(queue.retry_failed_receivers_at, message_id, due)


def _being_prepared(message_id: int) -> bool:
    """Whether more receivers are coming: the message is sending while its preparation goes on
    (sending.Streaming) under a live lease. A dead one is resumed by the sweeper, whose worker
    delivers the rest: lanes do not wait for it. Nor when tasks run inline (no other worker)."""
    if queue.runs_inline():
        return False
    message = (
        Message.objects.filter(
            pk=message_id, status=Message.Status.SENDING, status_data__still_preparing=True
        )
        .only("status_data", "created_datetime")
        .first()
    )
    return message is not None and not transitions.preparation_lease_ran_out(message)


def _on_hold(message_id: int) -> bool:
    return Message.objects.filter(pk=message_id, status__in=Message.HOLDING).exists()


def _others_in_flight(message_id: int) -> bool:
    return (
        MessageReceiver.objects.filter(
            message_id=message_id,
            status=MessageReceiver.Status.NOT_SENT,
            message__status=Message.Status.SENDING,
        )
        .exclude(claimed_by="")  # an uncertain receiver's pause is not a worker in flight
        .leased()
        .exists()
    )


def send_one(receiver: MessageReceiver) -> DeliveryResult:
    """One attempt now, in this process (MessageReceiver.send()). Never raises for a delivery
    failure; a channel that is unreachable counts as a failed attempt here. A receiver that a
    worker is delivering is left alone, and so is one whose sending limit is used up for longer
    than a short wait: the result says so and nothing is sent or charged."""
    if receiver.pk is None:
        receiver.save()
    worker_id = new_worker_id()
    if not transitions.claim_one(receiver, worker_id):
        reason = "Not sent: a worker is delivering this receiver right now."
        logger.warning("Receiver %s: %s", receiver.pk, reason)
        return DeliveryResult(delivered=False, reason=reason, details={"claimed_by": "another worker"})
    suppression = suppressions.suppression_of(receiver.send_to)
    try:
        result = suppressed_result(suppression) if suppression else _attempt_now(receiver, worker_id)
    except rate_limits.QuotaSpent as exc:
        transitions.release([receiver.pk], worker_id)  # not sent, not charged
        return DeliveryResult(delivered=False, reason=str(exc))
    record(receiver, result, worker_id)
    transitions.roll_up(receiver.message_id)
    return result


def _attempt_now(receiver: MessageReceiver, worker_id: str) -> DeliveryResult:
    """send_one's attempt, marked in flight like a worker's: an unreachable channel or an
    unknown message type is its result."""
    try:
        channel = channels.get_channel(receiver.message_type)
        budget = channel.seconds_per_receiver() + safety_margin()
        slot = rate_limits.Limiter.for_channel(channel, budget).acquire(receiver.send_to, stop=lambda: False)
        try:
            transitions.mark_sending_now(receiver, worker_id)
            return deliver_now(channel, receiver)
        finally:
            slot.release()
    except ChannelUnavailable as exc:
        transitions.unmark(receiver.pk, worker_id)  # nothing of it left
        return DeliveryResult(delivered=False, reason=str(exc))
    except LookupError as exc:
        return DeliveryResult(delivered=False, permanent=True, reason=str(exc))

"""Delivering receivers: claim → hand to the channel under a live lease → record → next.

Order per receiver, so that a worker killed at any point loses nothing and sends nothing twice
unflagged: the claim (with its lease) is committed; a receiver is handed to the channel only if
the lease outlasts the longest that one send can take (`Channel.seconds_per_receiver`), renewing
it first when needed; its result is committed before the channel takes the next one. A claim
whose lease ran out without results was abandoned by a dead worker: its receivers are claimable
again, and the first of them is flagged "delivery_uncertain" (transitions.claim_batch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from messaging import channels, conf, worker_shutdown
from messaging.channels import ChannelUnavailable, DeliveryResult
from messaging.models import Message, MessageReceiver
from messaging.services import controlling, transitions
from messaging.services.status import FailureWatch
from messaging.services.transitions import Claim

logger = logging.getLogger(__name__)

# How often a delivering worker publishes progress counts for the status page, in seconds.
PROGRESS_INTERVAL = 2.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseTooShort(Exception):
    """Even a fresh lease would run out during one send (the system check reports this)."""


def safety_margin() -> float:
    """Time kept in hand on a lease beyond one send: recording the result, clock drift."""
    return max(1.0, conf.lease_seconds() / 20)


@dataclass
class DeliveryRun:
    """One worker's delivery of one message: its expiry (read once) and its failure watch."""

    message_id: int
    worker_id: str
    expires_at: datetime | None
    watch: FailureWatch

    @classmethod
    def start(cls, message_id: int) -> DeliveryRun:
        expires_at = Message.objects.filter(pk=message_id).values_list("expires_at", flat=True).first()
        return cls(message_id, new_worker_id(), expires_at, FailureWatch.from_settings())

    def expired(self) -> bool:
        return self.expires_at is not None and timezone.now() >= self.expires_at


def deliver_message(message_id: int, *, wait_for_others: bool = False) -> bool:
    """Claim and deliver batches until none is left. False if the channel was unavailable (the
    message is then "delivery blocked", nothing charged), the message was paused, cancelled or
    expired, or the worker is stopping. With wait_for_others, also waits while other workers
    hold live claims on its receivers."""
    run = DeliveryRun.start(message_id)
    published = time.monotonic()
    with relaxed_commit_durability():
        while not worker_shutdown.requested():
            if time.monotonic() - published >= PROGRESS_INTERVAL:
                transitions.roll_up(message_id)
                published = time.monotonic()
            if run.expired():
                controlling.expire(message_id)
                return False
            claim = transitions.claim_batch(message_id, run.worker_id)
            if claim is None:
                if wait_for_others and _others_in_flight(message_id):
                    time.sleep(0.2)
                    continue
                break
            try:
                deliver_claim(claim, run)
            except ChannelUnavailable as exc:
                _block(message_id, str(exc))
                return False
            except LeaseTooShort as exc:
                logger.error("Message %s: nothing sent: %s", message_id, exc)
                return False
            if claim.halted:
                logger.info("Message %s is %s; this worker stops delivering it.", message_id, claim.halted)
                # Expiring rolls the counts up itself; otherwise publish what this worker recorded.
                if not (claim.halted == Message.Status.EXPIRED and controlling.expire(message_id)):
                    transitions.roll_up(message_id)
                return False
    if worker_shutdown.requested():
        _hand_over(message_id)
        return False
    transitions.roll_up(message_id, delivered_unblocked=True)
    schedule_retries(message_id)
    return True


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
                    transitions.record_result(receiver, failure, claim.worker_id)
                continue
            budget = channel.seconds_per_receiver() + safety_margin()
            for receiver, result in channel.deliver(_under_lease(claim, run, group, budget)):
                _record_and_watch(claim, run, receiver, result)
    finally:
        # Everything recorded has claimed_by cleared, so this releases only what was not sent.
        transitions.release(claim.ids, claim.worker_id)


def _record_and_watch(
    claim: Claim, run: DeliveryRun, receiver: MessageReceiver, result: DeliveryResult
) -> None:
    message_status = record(receiver, result, claim.worker_id)
    if message_status and message_status != Message.Status.SENDING:
        claim.halted = message_status  # paused, cancelled or expired meanwhile
        return
    if result.uncertain:
        return
    tripped = run.watch.add(result.delivered, result.reason)
    if tripped and controlling.auto_pause(run.message_id, tripped):
        logger.warning("Message %s paused itself: %s", run.message_id, tripped)
        claim.halted = Message.Status.PAUSED


def _under_lease(claim: Claim, run: DeliveryRun, receivers: list, budget: float) -> Iterator[MessageReceiver]:
    """Yield each receiver only while this worker's lease on it outlasts one send; renew the
    lease first when it would not; skip receivers lost meanwhile; stop when the worker stops,
    the message stopped being `sending` or its expiry passed."""
    for index, receiver in enumerate(receivers):
        if worker_shutdown.requested() or claim.halted:
            return
        if run.expired():
            claim.halted = Message.Status.EXPIRED
            return
        if claim.seconds_left() < budget:
            remaining = [r.pk for r in receivers[index:] if r.pk not in claim.lost]
            transitions.renew_leases(claim, remaining)
            if claim.seconds_left() < budget:
                lease = conf.lease_seconds()
                raise LeaseTooShort(
                    f"MESSAGING_LEASE_SECONDS ({lease}) cannot cover one send ({budget:.0f} s)."
                )
        if receiver.pk in claim.lost:
            logger.warning("Receiver %s was claimed by another worker; not sending it.", receiver.pk)
            continue
        yield receiver


def record(receiver: MessageReceiver, result: DeliveryResult, worker_id: str) -> str:
    """Record one attempt; returns the message's status, or "" if the receiver was not ours."""
    if result.uncertain:
        message_status = transitions.record_uncertain(receiver, result.reason, worker_id)
    else:
        message_status = transitions.record_result(receiver, result, worker_id)
    if not message_status:
        logger.warning("Receiver %s is no longer ours; its result was not recorded.", receiver.pk)
    return message_status


def _block(message_id: int, reason: str) -> None:
    logger.warning("Message %s: delivery blocked: %s", message_id, reason)
    blocked = transitions.block(message_id, reason)
    if blocked:
        from messaging import tasks

        eta = datetime.fromisoformat(blocked["next_attempt"])
        # robust: the sweeper retries blocked messages too, should the queue be unreachable.
        transaction.on_commit(
            lambda: tasks.retry_blocked_message.schedule((message_id,), eta=eta), robust=True
        )
    transitions.roll_up(message_id)


def _hand_over(message_id: int) -> None:
    """This worker is stopping: queue the rest for another consumer (its claims are released)."""
    from messaging import tasks

    transitions.roll_up(message_id)
    transaction.on_commit(lambda: tasks.deliver_message(message_id), robust=True)


def schedule_retries(message_id: int) -> None:
    """Queue the message's next automatic retry for when its backoff ends (the sweeper is
    only the safety net)."""
    from messaging import tasks

    due = (
        MessageReceiver.objects.filter(message_id=message_id)
        .awaiting_retry()
        .order_by("next_attempt_datetime")
        .values_list("next_attempt_datetime", flat=True)
        .first()
    )
    if due is not None:
        transaction.on_commit(
            lambda: tasks.retry_failed_receivers_of.schedule((message_id,), eta=due), robust=True
        )


@contextlib.contextmanager
def relaxed_commit_durability():
    """On PostgreSQL, don't wait for the WAL flush on each per-receiver commit while delivering.

    A killed worker loses nothing by this (the server still writes the WAL); only a crash of
    the database server itself could lose the last fraction of a second of results, and those
    receivers are claimed again and flagged like any abandoned claim. Scoped: the connection
    goes back to the server's setting afterwards, so later work on it commits durably.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


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
    worker is delivering is left alone: the result says so and nothing is sent."""
    if receiver.pk is None:
        receiver.save()
    worker_id = new_worker_id()
    if not transitions.claim_one(receiver, worker_id):
        reason = "Not sent: a worker is delivering this receiver right now."
        logger.warning("Receiver %s: %s", receiver.pk, reason)
        return DeliveryResult(delivered=False, reason=reason, details={"claimed_by": "another worker"})
    try:
        channel = channels.get_channel(receiver.message_type)
        result = next(iter(channel.deliver([receiver])))[1]
    except ChannelUnavailable as exc:
        result = DeliveryResult(delivered=False, reason=str(exc))
    except LookupError as exc:
        result = DeliveryResult(delivered=False, permanent=True, reason=str(exc))
    record(receiver, result, worker_id)
    transitions.roll_up(receiver.message_id)
    return result
